//! The listeners table: the sessions that LISTEN for appends. An append
//! sends NOTIFY only while the table has a row, so a row must not outlive
//! its session.

/// The statements of the listeners table, with the schema filled in.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    /// Registers the calling session (and removes the rows of sessions
    /// that ended, as `sweep` does).
    pub(crate) register: String,
    /// Removes the calling session's row.
    pub(crate) unregister: String,
    /// Removes the rows of sessions that have ended (a process that died).
    pub(crate) sweep: String,
}

impl Statements {
    pub(crate) fn new(schema: &str) -> Self {
        let listeners = format!("\"{schema}\".listeners");
        let sweep = format!(
            "DELETE FROM {listeners} \
             WHERE pid NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)"
        );
        Self {
            register: format!(
                "WITH gone AS ({sweep}) \
                 INSERT INTO {listeners} (pid) VALUES (pg_backend_pid()) \
                 ON CONFLICT (pid) DO UPDATE SET since = now()"
            ),
            unregister: format!("DELETE FROM {listeners} WHERE pid = pg_backend_pid()"),
            sweep,
        }
    }
}
