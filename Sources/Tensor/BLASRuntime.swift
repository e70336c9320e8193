import COpenBLAS
import Foundation

/// Makes OpenBLAS run the kernels this CPU deserves.
///
/// OpenBLAS chooses its kernels once, when the library loads, from the CPU models it recognises. The
/// Debian build does not know the Xeons of our machines and falls back to its SSE3 "Prescott"
/// kernels, 4–5× slower for sgemm (≈45 against ≈230 GFLOP/s on 2 cores, measured). The one
/// supported override, `OPENBLAS_CORETYPE`, is read only at load time, so a process that finds the
/// fallback chosen and the variable unset sets it from the CPU's flags and re-executes itself, once,
/// before doing anything else. A value already in the environment is always respected (some
/// machines set it on purpose), and `UNIMOE_KEEP_BLAS_CORE=1` turns this off.
public enum BLASRuntime {
    /// Kernel sets OpenBLAS falls back to on CPUs it does not recognise.
    static let fallbackCores: Set<String> = ["prescott", "core2", "penryn", "dunnington", "nehalem", "katmai", "banias"]

    /// The name of the kernel set OpenBLAS is using in this process.
    public static var coreName: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    /// The core type to ask for on this CPU, from /proc/cpuinfo's flags (nil: keep the default).
    public static func preferredCoreType(cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) -> String? {
        guard let cpuinfo, let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        let flags = Set(flagsLine.split(separator: " ").map(String.init))
        if flags.contains("avx512f") && flags.contains("avx512bw") && flags.contains("avx512vl") { return "SkylakeX" }
        if flags.contains("avx2") && flags.contains("fma") { return "Haswell" }
        return nil
    }

    /// Call first thing in `main`. Returns only if no re-execution was needed or possible.
    public static func selectFastKernels() {
        guard getenv("OPENBLAS_CORETYPE") == nil, getenv("UNIMOE_KEEP_BLAS_CORE") == nil,
              fallbackCores.contains(coreName.lowercased()),
              let wanted = preferredCoreType() else { return }
        setenv("OPENBLAS_CORETYPE", wanted, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // exec failed (no /proc?): carry on with the kernels already chosen.
    }
}
