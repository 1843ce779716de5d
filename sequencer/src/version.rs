//! Image version order: dot-separated components, numeric where both sides
//! are numbers, text otherwise, so `1.10.0` is newer than `1.9.2`.

use std::cmp::Ordering;

/// Compares two image versions component by component. A missing
/// component counts as `0`, so `1.2` and `1.2.0` are the same version.
/// A component that is not a plain number on both sides compares as text
/// (so `0-rc2` > `0-rc1`, and, plainly, `0` < `0-rc1`: `force` covers
/// the rare pre-release-to-release case).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (l, r) => {
                let order = compare_component(l.unwrap_or("0"), r.unwrap_or("0"));
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

fn compare_component(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_components_compare_as_numbers() {
        assert_eq!(compare_versions("1.10.0", "1.9.2"), Ordering::Greater);
        assert_eq!(compare_versions("1.9.2", "1.10.0"), Ordering::Less);
        assert_eq!(compare_versions("2.0", "2.0.0"), Ordering::Equal);
        assert_eq!(compare_versions("2.0.1", "2.0"), Ordering::Greater);
        assert_eq!(compare_versions("10", "9"), Ordering::Greater);
    }

    #[test]
    fn text_components_fall_back_to_string_order() {
        assert_eq!(
            compare_versions("1.2.0-rc2", "1.2.0-rc1"),
            Ordering::Greater
        );
        assert_eq!(compare_versions("1.3.x", "1.3.y"), Ordering::Less);
    }
}
