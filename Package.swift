// swift-tools-version:6.0
import PackageDescription

/// Release builds of the numeric code want the vectoriser at full strength; debug builds stay debuggable.
let fast: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]

#if arch(x86_64)
/// The Tensor kernels want 256-bit vectors and fused multiply-add: AVX2 + FMA + F16C (x86 servers
/// since 2013). Without it `addProduct` becomes a libm `fmaf` call per lane, so UNIMOE_FMA gates it.
let cpu: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"]), .define("UNIMOE_FMA")]
/// The C kernels (Sources/CKernels) are built for the same CPU level.
let cpuC: [CSetting] = [.unsafeFlags(["-O3", "-mavx2", "-mfma", "-mf16c"])]
#else
let cpu: [SwiftSetting] = [.define("UNIMOE_FMA")]  // arm64 always has FMA
let cpuC: [CSetting] = [.unsafeFlags(["-O3"])]
#endif

let package = Package(
    name: "unimoe",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "unimoe", targets: ["unimoe"]),
        // Preloaded by AllocationTests to count a process's heap allocations; linked by nothing.
        .library(name: "MallocCount", type: .dynamic, targets: ["MallocCount"]),
    ],
    targets: [
        // C libraries from Debian, each behind a shim header (see Sources/C*/shim.h).
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        // zmq.h lives in /usr/include; no pkg-config (libzmq.pc drags in krb5 -isystem flags SwiftPM rejects).
        .systemLibrary(name: "CZeroMQ", path: "Sources/CZeroMQ",
                       providers: [.apt(["libzmq3-dev"])]),
        .systemLibrary(name: "CFFmpeg", path: "Sources/CFFmpeg",
                       pkgConfig: "libavformat libavcodec libavutil libswscale libswresample",
                       providers: [.apt(["libavformat-dev", "libavcodec-dev", "libavutil-dev",
                                         "libswscale-dev", "libswresample-dev"])]),
        // microhttpd.h lives in /usr/include; its .pc adds nothing we need.
        .systemLibrary(name: "CMicroHTTPD", path: "Sources/CMicroHTTPD",
                       providers: [.apt(["libmicrohttpd-dev"])]),

        // Libraries: one module per concern.
        // Int8 dot products and q8_0 quantisation in C: Swift's SIMD types cannot express vpmaddubsw.
        .target(name: "CKernels", cSettings: cpuC),
        .target(name: "MallocCount"),
        .target(name: "Tensor", dependencies: ["COpenBLAS", "CKernels"], swiftSettings: fast + cpu),
        .target(name: "JSON", swiftSettings: fast),
        .target(name: "Checkpoint", dependencies: ["Tensor", "JSON"], swiftSettings: fast),
        .target(name: "Tokenizer", dependencies: ["JSON"], swiftSettings: fast),
        .target(name: "Models", dependencies: ["Tensor", "Checkpoint", "Media", "JSON"], swiftSettings: fast),
        .target(name: "Media", dependencies: ["CFFmpeg", "Tensor"], swiftSettings: fast),
        .target(name: "Wire", dependencies: ["CZeroMQ", "Tensor"], swiftSettings: fast),
        .target(name: "Options"),
        .target(name: "HTTP", dependencies: ["CMicroHTTPD"]),
        .target(name: "Gateway", dependencies: ["HTTP", "JSON", "Stages", "Wire", "Options"]),
        .target(name: "Stages", dependencies: ["Tensor", "Checkpoint", "Tokenizer", "Models", "Media", "Wire", "Options", "Training"],
                swiftSettings: fast),
        .target(name: "Training", dependencies: ["COpenBLAS", "Tensor", "Checkpoint", "JSON", "Tokenizer", "Models", "Media"],
                swiftSettings: fast),
        .target(name: "UnimoeCLI", dependencies: ["COpenBLAS", "Tensor", "Checkpoint", "Tokenizer", "Models", "Media", "Wire", "Stages", "Options", "Training"],
                swiftSettings: fast),

        // Thin executables.
        .executableTarget(name: "unimoe", dependencies: ["UnimoeCLI"]),
        // Pipeline roles (one process each; see docs/PIPELINE.md).
        .executableTarget(name: "unimoe-decode", dependencies: ["Stages"], path: "Sources/unimoe-decode"),
        .executableTarget(name: "unimoe-encode", dependencies: ["Stages"], path: "Sources/unimoe-encode"),
        .executableTarget(name: "unimoe-connect", dependencies: ["Stages"], path: "Sources/unimoe-connect"),
        .executableTarget(name: "unimoe-router", dependencies: ["Stages"], path: "Sources/unimoe-router"),
        .executableTarget(name: "unimoe-expert", dependencies: ["Stages"], path: "Sources/unimoe-expert"),
        .executableTarget(name: "unimoe-coordinator", dependencies: ["Stages"], path: "Sources/unimoe-coordinator"),
        // The OpenAI-compatible HTTP front door (docs/HTTP.md).
        .executableTarget(name: "unimoe-gateway", dependencies: ["Gateway"], path: "Sources/unimoe-gateway"),

        // Tests mirror modules one to one; fixtures live in Tests/Fixtures (made by scripts/make-fixtures).
        .target(name: "TestSupport", dependencies: ["Tensor", "Checkpoint"], path: "Tests/TestSupport"),
        .testTarget(name: "JSONTests", dependencies: ["JSON"]),
        .testTarget(name: "TensorTests", dependencies: ["Tensor", "CKernels", "Checkpoint", "TestSupport"]),
        .testTarget(name: "CheckpointTests", dependencies: ["Checkpoint", "Tensor", "TestSupport"]),
        .testTarget(name: "OptionsTests", dependencies: ["Options", "UnimoeCLI", "TestSupport"]),
        .testTarget(name: "TokenizerTests", dependencies: ["Tokenizer", "TestSupport"]),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "Tensor", "Checkpoint", "Tokenizer", "TestSupport"]),
        .testTarget(name: "EncodersTests", dependencies: ["Models", "Media", "Tensor", "Checkpoint", "TestSupport"]),
        .testTarget(name: "MediaTests", dependencies: ["Media", "Tensor", "TestSupport"]),
        .testTarget(name: "WireTests", dependencies: ["Wire", "Tensor", "TestSupport"]),
        .testTarget(name: "StagesTests", dependencies: ["Stages", "Models", "Media", "Tokenizer", "Wire", "TestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["UnimoeCLI", "Models", "Checkpoint", "Tensor", "JSON", "TestSupport"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Models", "Tensor", "Checkpoint", "Tokenizer", "TestSupport"]),
        .testTarget(name: "ConvertTests", dependencies: ["Checkpoint", "Tensor", "TestSupport"]),
        .testTarget(name: "PipelineTests", dependencies: ["Stages", "Wire", "Tensor", "Checkpoint", "TestSupport"]),
        .testTarget(name: "GatewayTests", dependencies: ["Gateway", "Stages", "Wire"]),
    ]
)
