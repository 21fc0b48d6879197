//! The cost of process mode on the real TSEM kernel, against the reference
//! C TMA (`../shared/tsem-kernel/mini-tma.c`). A test binary of its own:
//! cargo runs test binaries one after another, so nothing else of the
//! suite (no other guest, and none of the other tests' host-side checks)
//! shares the two cores with this timing. See `real_kernel.rs` for the
//! harness and its environment variables.

mod kernel_harness;

use kernel_harness::{kernel, Disk};

/// The cost of tsem-stream against the reference TMA: the 500 fork+exec
/// workload under `run -P` takes at most 1.15 times as long as under
/// mini-tma (the best of seven rounds each, same boot).
#[test]
fn process_mode_costs_at_most_15_percent_more_than_the_reference_tma() {
    let Some(kernel) = kernel() else { return };
    if kernel.mini_tma.is_none() {
        eprintln!(
            "skipped the cost comparison: {}",
            kernel.no_c_helpers.as_deref().unwrap_or("no mini-tma")
        );
        return;
    }
    let boot = kernel.boot("cost", &Disk::new());
    let ctx = boot.context();
    let rounds = [1, 2, 3, 4, 5, 6, 7];
    for r in rounds {
        assert_eq!(boot.result(&format!("mini_tma_rc_{r}")), "0", "{ctx}");
        assert_eq!(boot.result(&format!("tsem_stream_rc_{r}")), "0", "{ctx}");
    }
    assert_eq!(boot.result("invalid_releases"), "0", "{ctx}");
    let best = |name: &str| {
        rounds
            .iter()
            .map(|r| boot.number(&format!("{name}_us_{r}")))
            .min()
            .expect("seven rounds")
    };
    let times = |name: &str| -> Vec<String> {
        rounds
            .iter()
            .map(|r| format!("{:.2}", boot.number(&format!("{name}_us_{r}")) as f64 / 1e6))
            .collect()
    };
    let bare = boot.number("bare_us") as f64 / 1e6;
    let mini = best("mini_tma") as f64 / 1e6;
    let ours = best("tsem_stream") as f64 / 1e6;
    let ratio = ours / mini;
    eprintln!(
        "\n=== COST: 500 fork+exec under QEMU/TCG, best of 7 ===\n\
         unmodeled  {bare:.2} s\n\
         mini-tma   {mini:.2} s  (rounds {:?})\n\
         tsem-stream {ours:.2} s  (rounds {:?})\n\
         ratio tsem-stream / mini-tma = {ratio:.3} (limit 1.15)\n",
        times("mini_tma"),
        times("tsem_stream")
    );
    assert!(
        ratio <= 1.15,
        "tsem-stream run -P takes {ratio:.3} times as long as mini-tma ({ours:.2} s vs {mini:.2} s; \
         unmodeled {bare:.2} s)"
    );
}
