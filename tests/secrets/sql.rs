//! SQL only with bind parameters: the store's statements are static text.

use super::*;

/// Every statement the store runs goes through sqlx's `SqlSafeStr`: in the product store, a
/// `&'static str` (the files of `src/store/sql/`), never an `AssertSqlSafe` of a string built at
/// run time. Outside the store, no SQL at all. (Test support, `testing.rs` and `tests/`, may
/// assert its own SQL safe.)
#[test]
fn sql_is_static_text_in_the_store_and_absent_elsewhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut store_files = 0;
    for entry in walk(&root.join("src")) {
        let relative = entry.strip_prefix(root).unwrap();
        let source = std::fs::read_to_string(&entry).unwrap();
        if relative.starts_with("src/store") {
            let test_support =
                relative.ends_with("testing.rs") || relative.starts_with("src/store/tests");
            if !test_support {
                store_files += 1;
                assert!(
                    !source.contains("AssertSqlSafe"),
                    "{} runs SQL that is not static text",
                    relative.display()
                );
            }
        } else {
            assert!(
                !source.contains("AssertSqlSafe") && !source.contains("sqlx::query"),
                "{} runs SQL outside src/store",
                relative.display()
            );
        }
    }
    assert!(
        store_files >= 3,
        "only {store_files} store files: has the store moved?"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}
