//! Where config loading spends its time: `cargo run --profile fastrel --example parse_timing -- FILE`.
//! The edit it times is the benchmark's: the first `above = 0.5` of a `for = 1` check.
use std::path::Path;
use std::time::Instant;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: parse_timing FILE");
        std::process::exit(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2);
        }
    };
    let p = Path::new(&path);
    for _ in 0..3 {
        let t = Instant::now();
        let full = mlopsd::config::parse_full(&text, p);
        let full_t = t.elapsed();
        let t = Instant::now();
        let blockwise = mlopsd::config::blocks::parse_blockwise(&text);
        let blockwise_t = t.elapsed();
        let (Ok(cfg), Some(_)) = (full, blockwise) else {
            eprintln!("{path}: not a valid plain config (both load paths must take it)");
            std::process::exit(1);
        };
        let t = Instant::now();
        let idx = mlopsd::config::blocks::Index::of(&text);
        let index_t = t.elapsed();
        let t = Instant::now();
        let d = mlopsd::config::diff::ConfigDiff::new(&cfg, &cfg);
        let diff_t = t.elapsed();
        let t = Instant::now();
        let now = chrono::Utc::now();
        let n = cfg
            .scheduled()
            .iter()
            .filter(|(_, _, t)| t.next_after(now).is_some())
            .count();
        let sched_t = t.elapsed();
        let edited = text.replacen("above = 0.5\nfor = 1\n", "above = 0.6\nfor = 1\n", 1);
        let t = Instant::now();
        let hash = mlopsd::config::content_hash(&edited);
        let hash_t = t.elapsed();
        let t = Instant::now();
        let fast = idx
            .as_ref()
            .and_then(|i| mlopsd::config::blocks::reparse(&cfg, i, &edited));
        let fast_t = t.elapsed();
        let t = Instant::now();
        drop(fast);
        let drop_t = t.elapsed();
        println!(
            "full parse {full_t:.1?}; block-wise {blockwise_t:.1?}; index {index_t:.1?}; diff of all {diff_t:.1?} (empty: {}); \
             next fire x{n} {sched_t:.1?}; content hash {hash_t:.1?} ({hash}); one-item fast reload {fast_t:.1?}, its drop {drop_t:.1?}",
            d.is_empty()
        );
    }
}
