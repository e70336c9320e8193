import Foundation
import COpenBLAS
import CKernels

/// Makes OpenBLAS use the GEMM kernels this CPU can run.
///
/// Why it exists: Debian's OpenBLAS is built with DYNAMIC_ARCH and picks its kernels by CPU
/// family/model at load. Virtual machines that report a generic model ("Intel Xeon Processor")
/// fall back to the SSE3 `Prescott` kernels although the CPU has AVX2/FMA or AVX-512 — sgemm then
/// runs at a quarter of its speed (measured here: 62 GFLOP/s Prescott, 153 Haswell, 265 SkylakeX on
/// a 128×2816×1024 product with 2 threads), which makes every prefill and encoder pass 2–4× slower.
///
/// What it does, once per process before the first BLAS call (`Sgemm` triggers it): if the user has
/// not set `OPENBLAS_CORETYPE` and the kernels OpenBLAS chose are older than what /proc/cpuinfo
/// reports, it re-runs OpenBLAS's own dynamic-arch selection (`gotoblas_dynamic_quit` +
/// `gotoblas_dynamic_init`, looked up with dlsym so a non-DYNAMIC_ARCH build is left alone) with
/// `OPENBLAS_CORETYPE` set — the same switch the environment variable gives at load.
public enum OpenBLASCore {
    /// The kernel family OpenBLAS uses now (e.g. "Haswell", "SkylakeX", "Prescott").
    public static var current: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    /// The family chosen at the first call (performs the selection once; thread-safe).
    @discardableResult
    public static func ensureSelected() -> String { selected }

    /// OpenBLAS is already at one thread, its own threads joined, from load on
    /// (`unimoe_openblas_single_thread`, before main): `Sgemm` splits every product over our pool.
    private static let selected: String = select()

    /// Capability rank of the x86 kernel families we may switch between; unknown names are never replaced.
    public static func rank(_ name: String) -> Int? {
        switch name.lowercased() {
        case "katmai", "coppermine", "northwood", "prescott", "banias", "atom", "core2", "penryn",
             "dunnington", "nehalem", "nano", "opteron", "opteron_sse3", "barcelona", "bobcat":
            return 0
        case "sandybridge", "bulldozer", "piledriver", "steamroller", "excavator":
            return 1
        case "haswell", "zen":
            return 2
        case "skylakex", "cooperlake", "sapphirerapids":
            return 3
        default:
            return nil
        }
    }

    /// The best family the CPU flags allow (x86 Linux only; nil elsewhere or when unreadable).
    public static func bestForThisCPU() -> String? {
        #if arch(x86_64) && os(Linux)
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        let flags = Set(line.split(separator: " ").map(String.init))
        if ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"].allSatisfy(flags.contains) { return "SkylakeX" }
        if ["avx2", "fma"].allSatisfy(flags.contains) { return "Haswell" }
        if flags.contains("avx") { return "Sandybridge" }
        return nil
        #else
        return nil
        #endif
    }

    private static func select() -> String {
        let now = current
        guard ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil,
              let have = rank(now), let best = bestForThisCPU(), let want = rank(best), want > have,
              let quit = dlsym(nil, "gotoblas_dynamic_quit"), let initialise = dlsym(nil, "gotoblas_dynamic_init")
        else { return now }
        typealias Fn = @convention(c) () -> Void
        setenv("OPENBLAS_CORETYPE", best, 1)
        unsafeBitCast(quit, to: Fn.self)()
        unsafeBitCast(initialise, to: Fn.self)()
        // Leave the environment as the user had it (child processes make their own choice).
        unsetenv("OPENBLAS_CORETYPE")
        return current
    }
}

extension OpenBLASCore {
    /// Runs `body` with OpenBLAS's own threading at `threads`, then back at one with its threads
    /// joined (so they do not spin beside what runs next): for the benches' raw-sgemm references
    /// only (our products split over the pool instead, `Sgemm`).
    public static func withOwnThreads<R>(_ threads: Int, _ body: () throws -> R) rethrows -> R {
        ensureSelected()
        openblas_set_num_threads(Int32(max(1, threads)))
        defer { unimoe_openblas_single_thread() }
        return try body()
    }
}
