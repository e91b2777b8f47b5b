//! The HA keys of `[daemon]`: `ha_table` (a DynamoDB table name), `ha_lease`, `ha_notify`.

use std::time::Duration;

use super::daemon::bounded;
use super::Refs;
use crate::config::reader::{Diags, Table};
use crate::config::DaemonConfig;

/// Reads the HA keys into `cfg`; false when one has a problem (reported).
pub(super) fn read_ha(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    cfg: &mut DaemonConfig,
    refs: &mut Refs,
) -> bool {
    let mut ok = table(d, t, cfg);
    // A lease is renewed three times per duration, and a standby waits a whole one.
    match bounded(
        d,
        t,
        "ha_lease",
        Duration::from_secs(3),
        Duration::from_secs(600),
        "`ha_lease` must be between 3s and 10m (the leader renews it three times per lease; a standby takes over after one)",
    ) {
        Ok(Some(g)) => cfg.ha_lease = g,
        Ok(None) => {}
        Err(()) => ok = false,
    }
    if let Some(n) = t.string_list(d, "ha_notify") {
        refs.notifiers.extend(n.v.iter().cloned());
        cfg.ha_notify = Some(n.v.into_iter().map(|x| x.v).collect());
    }
    ok
}

/// `ha_table`: DynamoDB's rule for table names.
fn table(d: &mut Diags, t: &mut Table<'_, '_>, cfg: &mut DaemonConfig) -> bool {
    let Some(s) = t.string(d, "ha_table") else {
        return true;
    };
    let valid = (3..=255).contains(&s.v.len())
        && s.v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        d.push(
            s.span.clone(),
            format!("`ha_table` must be a DynamoDB table name (3 to 255 of a-z, A-Z, 0-9, `_`, `-`, `.`), found {}", d.show(&s)),
        );
        return false;
    }
    cfg.ha_table = Some(s.v);
    true
}
