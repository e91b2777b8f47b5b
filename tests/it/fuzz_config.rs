//! Fuzzing `mlopsd validate`'s parser and validator: mutated configs must never panic or hang,
//! and every rejection must carry a location inside the file. The seed corpus in
//! `tests/fuzz_corpus/` runs as a regression test; a bounded mutation pass follows
//! (`MLOPSD_FUZZ_SECONDS`, default a fixed 3,000 mutations; `scripts/fuzz` runs 60 s).
//! Block-wise loading must give what the whole-file parse gives, on every input.
//! A failing input is written to `target/fuzz-failures/` to be added to the corpus.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn corpus() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus");
    let mut v: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let t = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
            (p, t)
        })
        .collect();
    v.sort();
    assert!(v.len() >= 10, "seed corpus missing");
    v
}

/// Parses `text`; returns a description of what is wrong with the outcome, if anything.
fn check(text: &str) -> Option<String> {
    let start = Instant::now();
    let res = std::panic::catch_unwind(|| mlopsd::config::parse(text, Path::new("fuzz.toml")));
    let took = start.elapsed();
    let lines = text.split('\n').count();
    match res {
        Err(p) => Some(format!(
            "panic: {:?}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        )),
        Ok(_) if took > Duration::from_secs(2) => Some(format!("took {took:?}")),
        // Block-wise loading must never accept what the whole-file parse would not, nor build
        // anything else.
        Ok(r)
            if std::panic::catch_unwind(|| {
                mlopsd::config::parse_full(text, Path::new("fuzz.toml"))
            })
            .ok()
            .map(|f| f.ok())
                != Some(r.as_ref().ok().cloned()) =>
        {
            Some("block-wise loading and the whole-file parse disagree".into())
        }
        Ok(Ok(_)) => None,
        Ok(Err(e)) if e.errors.is_empty() => Some("rejected without any error".into()),
        Ok(Err(e)) => e
            .errors
            .iter()
            .find(|(l, c, m)| *l == 0 || *c == 0 || *l > lines + 1 || m.is_empty())
            .map(|x| format!("bad location {x:?}")),
    }
}

fn save_failure(text: &str, why: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
    std::fs::create_dir_all(&dir).ok();
    let p = dir.join(format!(
        "failure-{}.toml",
        mlopsd::config::content_hash(text)
    ));
    std::fs::write(&p, text).ok();
    eprintln!("fuzz failure ({why}) saved to {}", p.display());
    p
}

#[test]
fn seed_corpus_never_panics_and_locates_every_error() {
    for (p, t) in corpus() {
        if let Some(why) = check(&t) {
            panic!("{}: {why}", p.display());
        }
    }
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "{",
    "}",
    ",",
    ".",
    "#",
    "\n",
    " ",
    "\\",
    "\\u",
    "-",
    "+",
    "0",
    "1e400",
    "nan",
    "inf",
    "true",
    "1979-05-27T07:32:00Z",
    "ü",
    "\u{0}",
    "\r",
    "above",
    "below",
    "schedule",
    "on_check",
    "start_pipeline",
    "notify",
    "cron(",
    ")",
    "?",
    "L",
    "W",
    "#",
    "*/",
    "rate(",
    "every ",
    "${",
    "}",
    "[checks.x]",
    "[rules.y]",
    "for = ",
    "timezone = \"",
    "Europe/Berlin",
    "\"1h\"",
    "\"0s\"",
    "-9223372036854775808",
    "99999999999999999999",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut b: Vec<char> = text.chars().collect();
    for _ in 0..(1 + rng.below(6)) {
        match rng.below(6) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                let n = 1 + rng.below(20.min(b.len() - i));
                b.drain(i..i + n);
            }
            1 | 2 => {
                let i = rng.below(b.len() + 1);
                let t = TOKENS[rng.below(TOKENS.len())];
                for (k, c) in t.chars().enumerate() {
                    b.insert(i + k, c);
                }
            }
            3 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = char::from_u32(rng.below(0x250) as u32).unwrap_or('x');
            }
            4 => {
                // Duplicate a line (duplicate keys and tables).
                let s: String = b.iter().collect();
                let lines: Vec<&str> = s.split('\n').collect();
                let i = rng.below(lines.len());
                let mut out = lines.clone();
                out.insert(i, lines[i]);
                b = out.join("\n").chars().collect();
            }
            _ => {
                // Truncate (a file cut mid-write).
                let n = rng.below(b.len() + 1);
                b.truncate(n);
            }
        }
    }
    b.into_iter().collect()
}

#[test]
fn mutated_configs_never_panic_and_every_rejection_is_located() {
    let seeds = corpus();
    let secs: Option<u64> = std::env::var("MLOPSD_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok());
    let mut rng = Rng(std::env::var("MLOPSD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15));
    let start = Instant::now();
    let (mut n, mut valid) = (0u64, 0u64);
    loop {
        match secs {
            Some(s) if start.elapsed() >= Duration::from_secs(s) => break,
            None if n >= 3000 => break,
            _ => {}
        }
        let (_, seed) = &seeds[rng.below(seeds.len())];
        let m = mutate(&mut rng, seed);
        if let Some(why) = check(&m) {
            let p = save_failure(&m, &why);
            panic!("mutation {n} fails: {why}; input in {}", p.display());
        }
        if mlopsd::config::parse(&m, Path::new("fuzz.toml")).is_ok() {
            valid += 1;
        }
        n += 1;
    }
    println!("FUZZ: {n} mutated configs in {:.1} s, {valid} still valid, 0 panics, every rejection located", start.elapsed().as_secs_f64());
}
