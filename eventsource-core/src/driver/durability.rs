//! The durability check's outcome at connect, for backend authors: what
//! a [`Durability`] mode does with the risks a backend found.

use crate::{Durability, DurabilityRisk, Error, Result};

/// Applies `mode` to what `backend`'s check found (`risks`, or the error
/// that kept it from reading the settings): `Ok` when nothing was found
/// or the mode lets the connect go on (each risk logged under `Warn`).
pub fn enforce(
    backend: &'static str,
    mode: Durability,
    found: std::result::Result<Vec<DurabilityRisk>, String>,
) -> Result<()> {
    let risks = match (mode, found) {
        (Durability::Off, _) => return Ok(()),
        (_, Ok(risks)) => risks,
        (_, Err(why)) => vec![DurabilityRisk::new(
            "(settings)",
            "unreadable",
            format!("could not read the broker's settings to check them: {why}"),
        )],
    };
    if risks.is_empty() {
        return Ok(());
    }
    match mode {
        Durability::Require => Err(Error::Durability { backend, risks }),
        _ => {
            for risk in &risks {
                tracing::warn!(
                    backend,
                    setting = %risk.setting,
                    value = %risk.value,
                    "{backend}: {} (durability = warn; `require` refuses to connect)",
                    risk
                );
                crate::metrics::durability_risk(backend, &risk.setting);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_decides_what_a_risk_does() {
        let risk = || Ok(vec![DurabilityRisk::new("appendonly", "no", "lost")]);
        assert!(enforce("redis", Durability::Off, risk()).is_ok());
        assert!(enforce("redis", Durability::Warn, risk()).is_ok());
        let err = enforce("redis", Durability::Require, risk()).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("redis") && text.contains("appendonly = no: lost"),
            "{text}"
        );
        assert!(enforce("redis", Durability::Require, Ok(vec![])).is_ok());
        let err = enforce("redis", Durability::Require, Err("NOPERM".into()))
            .expect_err("unverified is refused");
        assert!(err.to_string().contains("NOPERM"), "{err}");
        assert!(enforce("redis", Durability::Warn, Err("NOPERM".into())).is_ok());
    }
}
