//! Data-driven config tests: for each `tests/config_cases/NAME.toml`, `NAME.expected` holds
//! the exact list of errors `mlopsd validate` must print for it, one `LINE:COL: message` a
//! line (empty: the file must be valid). `MLOPSD_BLESS=1` rewrites the `.expected` files from what is produced (review the diff!).

use std::path::Path;

fn expected(path: &Path) -> Vec<String> {
    let exp = path.with_extension("expected");
    let text = std::fs::read_to_string(&exp).unwrap_or_else(|e| panic!("{}: {e}", exp.display()));
    text.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_case_reports_exactly_its_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config_cases");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("cases dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    assert!(
        entries.len() >= 10,
        "expected the case files in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for path in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        let text = std::fs::read_to_string(path).expect("read case");
        let got: Vec<String> = match mlopsd::config::parse(&text, path) {
            Ok(_) => vec![],
            Err(e) => e
                .errors
                .iter()
                // Definition paths are read from the case's directory: print them from the
                // crate root, so the expectations hold in any checkout.
                .map(|(l, c, m)| {
                    let m = m.replace(concat!(env!("CARGO_MANIFEST_DIR"), "/"), "");
                    format!("{l}:{c}: {m}")
                })
                .collect(),
        };
        if std::env::var("MLOPSD_BLESS").is_ok() {
            let mut out = got.join("\n");
            out.push('\n');
            std::fs::write(
                path.with_extension("expected"),
                if got.is_empty() { String::new() } else { out },
            )
            .expect("bless");
        }
        let want = expected(path);
        if got != want {
            failures.push(format!(
                "{}:\n  want: {want:#?}\n  got:  {got:#?}",
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
