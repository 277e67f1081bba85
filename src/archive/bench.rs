//! Microbenchmark, run by docs/benchmarks/backup.sh:
//! `HLA_BENCH_TREE=/some/tree cargo test --release --lib archive::bench -- --ignored --nocapture`
//!
//! Optional: HLA_BENCH_OUT (dir for the archive), HLA_BENCH_LEVEL (3),
//! HLA_BENCH_THREADS (0), HLA_BENCH_KEEP=1 (keep the archive).
//! Prints one `BENCH key=value ...` line per phase; peak RSS is VmHWM from
//! /proc/self/status, reset before each phase (clear_refs 5).

use super::*;
use std::time::Instant;

fn vm_hwm_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn reset_hwm() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

#[test]
#[ignore]
fn bench_create_and_verify() {
    let Ok(tree) = std::env::var("HLA_BENCH_TREE") else {
        eprintln!("HLA_BENCH_TREE is not set; nothing to do");
        return;
    };
    let out = std::env::var("HLA_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join(format!("hla-bench-{}", std::process::id())));
    let level: i32 = env_or("HLA_BENCH_LEVEL", 3);
    let threads: u32 = env_or("HLA_BENCH_THREADS", 0);
    let name = "bench.tar.zst";
    let _ = remove(&out.join(name));
    let sources = [PathBuf::from(&tree)];

    reset_hwm();
    let idle = vm_hwm_mb();
    let t = Instant::now();
    let info = create(&CreateRequest {
        sources: &sources,
        dest_dir: &out,
        file_name: name,
        level,
        compress: true,
        optional: &[],
        threads,
        exclude: &[],
        meta: ManifestMeta {
            service: "bench".into(),
            kind: "archive".into(),
            created_at: 0,
            hostname: "bench".into(),
            capture: None,
        },
        generated: &[],
        cancel: None,
    })
    .expect("create");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "BENCH phase=create seconds={secs:.3} peak_rss_mb={:.1} idle_rss_mb={idle:.1} entries={} bytes_in={} size={} ratio={:.3} mb_per_s={:.1} warnings={} archive={}",
        vm_hwm_mb(),
        info.entries,
        info.bytes_in,
        info.size,
        info.bytes_in as f64 / info.size as f64,
        info.bytes_in as f64 / secs / 1e6,
        info.warnings.len(),
        info.path.display()
    );

    reset_hwm();
    let t = Instant::now();
    let v = verify(&info.path, None).expect("verify");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!((v.entries, v.bytes_out), (info.entries, info.bytes_in));
    println!(
        "BENCH phase=verify seconds={secs:.3} peak_rss_mb={:.1} mb_per_s={:.1}",
        vm_hwm_mb(),
        info.size as f64 / secs / 1e6
    );

    reset_hwm();
    let t = Instant::now();
    verify_checksum(&info.path, None).expect("verify_checksum");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "BENCH phase=verify_checksum seconds={secs:.3} peak_rss_mb={:.1} mb_per_s={:.1}",
        vm_hwm_mb(),
        info.size as f64 / secs / 1e6
    );

    if std::env::var_os("HLA_BENCH_KEEP").is_none() {
        remove(&info.path).expect("remove");
    }
}
