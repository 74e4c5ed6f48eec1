//! `--static-endpoints host:port[=role],...` for local runs without a cluster.

use crate::pool::endpoint::{Endpoint, Role};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StaticEndpointError {
    #[error("endpoint {0:?} is not host:port")]
    Address(String),
    #[error("endpoint {0:?}: role must be prefill, decode, both or prefill-decode")]
    Role(String),
}

/// Parses a comma separated list; empty items are skipped.
pub fn parse(list: &str) -> Result<Vec<Endpoint>, StaticEndpointError> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (addr, role) = match item.split_once('=') {
            Some((a, r)) => (
                a.trim(),
                Role::from_label(r.trim())
                    .filter(|r| *r != Role::Unlabeled)
                    .ok_or_else(|| StaticEndpointError::Role(item.to_string()))?,
            ),
            None => (item, Role::Unlabeled),
        };
        let valid = addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            return Err(StaticEndpointError::Address(item.to_string()));
        }
        out.push(Endpoint::new(addr, role));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_roles() {
        let e = parse("127.0.0.1:8000, 127.0.0.1:8001=prefill,h:9=decode,").expect("valid");
        assert_eq!(
            e,
            vec![
                Endpoint::new("127.0.0.1:8000", Role::Unlabeled),
                Endpoint::new("127.0.0.1:8001", Role::Prefill),
                Endpoint::new("h:9", Role::Decode),
            ]
        );
    }

    #[test]
    fn refuses_bad_items() {
        assert_eq!(
            parse("nohost"),
            Err(StaticEndpointError::Address("nohost".into()))
        );
        assert_eq!(
            parse("h:0"),
            Err(StaticEndpointError::Address("h:0".into()))
        );
        assert_eq!(
            parse("h:1=chef"),
            Err(StaticEndpointError::Role("h:1=chef".into()))
        );
    }
}
