//! A handler file named like a standard module (`json.py`, `logging.py`), in
//! its own directory or the working directory, shadows nothing: the bridge
//! and the handler's own imports get the standard library, its neighbours
//! stay importable, and calls work.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cenote_core::Worker;
use cenote_python::{PyCall, PythonConfig, PythonFactory};
use common::*;
use serde_json::{json, Value};

/// The handler's body, whatever its file is named.
const HANDLER: &str = r#"
import json
import logging

from neighbour import VALUE


def dumps(value):
    return json.dumps(value, sort_keys=True)


def level():
    return logging.getLevelName(logging.WARNING)


def lazy_csv():
    # Imported only now, after the handler's directory went on sys.path.
    import csv
    return csv.__file__


def where():
    return {
        "json": json.__file__,
        "logging": logging.__file__,
        "name": __name__,
        "neighbour": VALUE,
    }
"#;

/// A fresh directory holding `file` (the handler), a neighbour module, and
/// a `csv.py` that must never be imported.
fn handler_dir(tag: &str, file: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cenote-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), HANDLER).unwrap();
    std::fs::write(dir.join("neighbour.py"), "VALUE = 42\n").unwrap();
    std::fs::write(
        dir.join("csv.py"),
        "raise ImportError('the csv.py next to the handler was imported')\n",
    )
    .unwrap();
    dir
}

fn outside(path: &Value, dir: &Path) -> bool {
    let path = path.as_str().unwrap_or_default();
    !path.is_empty() && !path.starts_with(dir.to_str().unwrap())
}

#[tokio::test]
async fn handler_files_named_like_standard_modules_shadow_nothing() {
    init_tracing();
    for file in ["json.py", "logging.py"] {
        // In the handler's directory, then also as the working directory
        // (which `-c` puts first on sys.path).
        for in_cwd in [false, true] {
            let tag = new_tag(&format!("shadow-{}", &file[..file.len() - 3]));
            let dir = handler_dir(&tag, file);
            let mut config = chaos(&tag);
            config.handler = dir.join(file).into();
            let config: PythonConfig = if in_cwd {
                config.working_dir(&dir)
            } else {
                config
            };
            let case = format!("{file}, in cwd: {in_cwd}");
            let mut w = PythonFactory::new(config)
                .spawn("t/shadow")
                .await
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            let functions = &w.ready_info().functions;
            for f in ["dumps", "level", "lazy_csv", "where"] {
                assert!(functions.iter().any(|g| g == f), "{case}: {functions:?}");
            }
            assert_eq!(
                w.call_json(PyCall::new("dumps", json!([{"b": 1, "a": 2}])), ctx())
                    .await
                    .unwrap(),
                json!(r#"{"a": 2, "b": 1}"#),
                "{case}"
            );
            assert_eq!(
                w.call_json(PyCall::new("level", json!(null)), ctx())
                    .await
                    .unwrap(),
                json!("WARNING"),
                "{case}"
            );
            let csv = w
                .call_json(PyCall::new("lazy_csv", json!(null)), ctx())
                .await
                .unwrap();
            assert!(outside(&csv, &dir), "{case}: {csv}");
            let found = w
                .call_json(PyCall::new("where", json!(null)), ctx())
                .await
                .unwrap();
            assert!(outside(&found["json"], &dir), "{case}: {found}");
            assert!(outside(&found["logging"], &dir), "{case}: {found}");
            assert_eq!(found["neighbour"], json!(42), "{case}: {found}");
            // Not registered as the module it is named like.
            assert_ne!(found["name"], json!(&file[..file.len() - 3]), "{case}");
            w.shutdown(Duration::from_secs(1)).await;
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

#[tokio::test]
async fn an_ordinary_handler_file_keeps_its_own_name() {
    let tag = test_tag("ownname");
    let dir = handler_dir(&tag, "shadow_free_handlers.py");
    let mut config = chaos(&tag);
    config.handler = dir.join("shadow_free_handlers.py").into();
    let mut w = PythonFactory::new(config).spawn("t/own").await.unwrap();
    let found = w
        .call_json(PyCall::new("where", json!(null)), ctx())
        .await
        .unwrap();
    // Its neighbours can `import shadow_free_handlers` and share it.
    assert_eq!(found["name"], json!("shadow_free_handlers"), "{found}");
    w.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
