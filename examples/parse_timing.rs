//! Where config loading spends its time: `cargo run --profile fastrel --example parse_timing -- FILE`.
fn main() {
    let path = std::env::args().nth(1).expect("FILE");
    let text = std::fs::read_to_string(&path).expect("read");
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let doc = toml::de::DeTable::parse(&text).expect("toml");
        let parse = t.elapsed();
        drop(doc);
        let t = std::time::Instant::now();
        let cfg = mlopsd::config::parse(&text, std::path::Path::new(&path)).expect("valid");
        let all = t.elapsed();
        let t = std::time::Instant::now();
        let d = mlopsd::config::diff::ConfigDiff::new(&cfg, &cfg);
        let diff = t.elapsed();
        let t = std::time::Instant::now();
        let now = chrono::Utc::now();
        let mut n = 0;
        for c in cfg.checks.values() {
            if c.timed.schedule.next_after(c.timed.timezone, now).is_some() {
                n += 1;
            }
        }
        let sched = t.elapsed();
        let edited = text.replacen("above = 0.5\nfor = 1\n", "above = 0.6\nfor = 1\n", 1);
        let t = std::time::Instant::now();
        let fast = mlopsd::config::incremental::reparse(&cfg, &text, &edited);
        let inc = t.elapsed();
        let t = std::time::Instant::now();
        let d2 = fast.as_ref().map(|f| mlopsd::config::diff::ConfigDiff::new(&cfg, f).counts());
        let diff2 = t.elapsed();
        println!(
            "toml parse {parse:?}; parse+build {all:?}; diff {diff:?} ({}); next_after x{n} {sched:?}; one-item incremental reparse {inc:?} (taken: {}), its diff {diff2:?} {d2:?}",
            d.is_empty(),
            fast.is_some()
        );
    }
}

