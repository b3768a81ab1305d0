use super::names::{Kind, ALL};

#[test]
fn every_family_has_one_name_and_help_text() {
    let mut seen = std::collections::HashSet::new();
    for family in ALL {
        assert!(seen.insert(family.name), "{} twice", family.name);
        let help = family.help();
        assert!(help.len() > 10, "{}: help {help:?}", family.name);
        assert!(!help.contains(['`', '\n']), "{}: {help:?}", family.name);
        assert!(!help.starts_with(' ') && help.ends_with('.'), "{help:?}");
    }
    assert_eq!(ALL.len(), 19);
}

/// promtool's lint: counters, and only counters, end in `_total`; a unit is in the name.
#[test]
fn names_follow_the_prometheus_conventions() {
    for family in ALL {
        let name = family.name;
        assert!(name.starts_with("shardis_"), "{name}");
        assert_eq!(
            name.ends_with("_total"),
            family.kind == Kind::Counter,
            "{name}"
        );
        match family.unit {
            Some(metrics::Unit::Seconds) => assert!(name.ends_with("_seconds"), "{name}"),
            Some(metrics::Unit::Bytes) => assert!(name.contains("_bytes"), "{name}"),
            None => {}
            Some(other) => panic!("{name}: unit {other:?} not expected"),
        }
    }
}
