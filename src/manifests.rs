//! Reading policy files the way `kubectl apply -f` does: files or directories (`.yaml`, `.yml`,
//! `.json`, recursing only when asked), several YAML documents per file, empty documents skipped.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// One document of one file, parsed or not.
#[derive(Debug)]
pub struct Document {
    /// The file it came from.
    pub file: PathBuf,
    /// Position in the file, from 1.
    pub index: usize,
    /// The parsed document, or why the file could not be read or parsed.
    pub content: Result<Value, String>,
}

/// Expands `paths` into the files to read: files as given, directories' manifest files sorted by
/// name (and their subdirectories' when `recursive`). Missing paths are reported, not skipped.
pub fn manifest_files(
    paths: &[PathBuf],
    recursive: bool,
) -> Vec<Result<PathBuf, (PathBuf, String)>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            collect_dir(path, recursive, &mut files);
        } else if path.is_file() {
            files.push(Ok(path.clone()));
        } else {
            files.push(Err((path.clone(), "no such file or directory".to_owned())));
        }
    }
    files
}

fn collect_dir(dir: &Path, recursive: bool, files: &mut Vec<Result<PathBuf, (PathBuf, String)>>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => return files.push(Err((dir.to_path_buf(), err.to_string()))),
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            if recursive {
                collect_dir(&path, recursive, files);
            }
        } else if is_manifest(&path) {
            files.push(Ok(path));
        }
    }
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Reads every document of `file`. A file that cannot be read or parsed yields one document
/// carrying the error.
pub fn read_documents(file: &Path) -> Vec<Document> {
    let error = |message: String| {
        vec![Document {
            file: file.to_path_buf(),
            index: 1,
            content: Err(message),
        }]
    };
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) => return error(format!("cannot read: {err}")),
    };
    match parse_documents(&text) {
        Ok(values) if values.is_empty() => error("contains no document".to_owned()),
        Ok(values) => values
            .into_iter()
            .enumerate()
            .map(|(i, value)| Document {
                file: file.to_path_buf(),
                index: i + 1,
                content: Ok(value),
            })
            .collect(),
        Err(message) => error(message),
    }
}

/// Parses a YAML stream (JSON is YAML) into its documents.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    serde_saphyr::from_multiple::<Value>(text).map_err(|err| format!("not valid YAML: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_skips_empty_ones() {
        let docs = parse_documents("a: 1\n---\n---\nb: [x]\n").unwrap();
        assert_eq!(
            docs,
            vec![serde_json::json!({"a": 1}), serde_json::json!({"b": ["x"]})]
        );
    }

    #[test]
    fn reports_yaml_errors() {
        let err = parse_documents("a: [1\n").unwrap_err();
        assert!(err.starts_with("not valid YAML"), "{err}");
        let err = parse_documents("a: 1\na: 2\n").unwrap_err();
        assert!(err.contains("not valid YAML"), "{err}");
    }

    #[test]
    fn walks_directories_like_kubectl() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yaml"), "x: 1").unwrap();
        std::fs::write(dir.path().join("a.yml"), "x: 1").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/c.json"), "{}").unwrap();
        let names = |recursive| -> Vec<String> {
            manifest_files(&[dir.path().to_path_buf()], recursive)
                .into_iter()
                .map(|f| {
                    f.unwrap()
                        .strip_prefix(dir.path())
                        .unwrap()
                        .display()
                        .to_string()
                })
                .collect()
        };
        assert_eq!(names(false), ["a.yml", "b.yaml"]);
        assert_eq!(names(true), ["a.yml", "b.yaml", "sub/c.json"]);
        let missing = manifest_files(&[dir.path().join("nope.yaml")], false);
        assert!(missing[0].is_err());
    }
}
