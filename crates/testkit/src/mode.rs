//! Which start mode the suite runs Python workers in, so the same tests
//! run in either: `CENOTE_TEST_START_MODE=spawn` or `fork_server`, else the
//! default (`auto`: the fork server where it is safe).

use serde::de::DeserializeOwned;

/// The env variable that picks the mode.
pub const START_MODE_VAR: &str = "CENOTE_TEST_START_MODE";

/// The mode `CENOTE_TEST_START_MODE` names (as `cenote_python::StartMode`
/// spells it in serde: `spawn`, `fork_server`, `auto`), else `M`'s
/// default.
pub fn start_mode<M: DeserializeOwned + Default>() -> M {
    std::env::var(START_MODE_VAR)
        .ok()
        .and_then(|v| serde_json::from_value(serde_json::Value::String(v)).ok())
        .unwrap_or_default()
}
