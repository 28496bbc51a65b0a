//! The catalogue of finding rules: ids, default severities and one-line descriptions (used by SARIF).

use crate::diag::Severity;

/// One rule that `dfdwatch check` can report.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// Stable id, e.g. `X001`.
    pub id: &'static str,
    /// Severity unless the finding overrides it.
    pub severity: Severity,
    /// Short kebab-case name.
    pub name: &'static str,
    /// What the rule checks, in one sentence.
    pub description: &'static str,
}

const fn rule(id: &'static str, severity: Severity, name: &'static str, description: &'static str) -> Rule {
    Rule { id, severity, name, description }
}

use Severity::{Error as E, Warning as W};

/// Every rule, in id order.
pub const RULES: &[Rule] = &[
    rule("P001", E, "yaml-syntax", "The file is not valid YAML."),
    rule("P002", E, "duplicate-key", "A mapping repeats a key."),
    rule("P003", E, "unknown-field", "A field that the format does not define."),
    rule(
        "P004",
        E,
        "invalid-value",
        "A field has the wrong type, a missing required field, or a value outside its allowed set.",
    ),
    rule("P005", E, "wrong-kind", "apiVersion or kind is not an ApprovedDataFlowDiagram of a supported version."),
    rule(
        "P006",
        E,
        "unsupported-yaml",
        "Anchors, aliases and tags are not allowed: write values out so diffs show them.",
    ),
    rule("P007", E, "limit", "The input exceeds a size, depth or count limit."),
    rule("S001", E, "dangling-reference", "A reference names an id that is not defined."),
    rule("S002", E, "duplicate-id", "Two items of the same kind share an id."),
    rule("S003", W, "overlapping-flows", "Two flows between the same nodes cover the same port and protocol."),
    rule("S004", E, "zone-nesting", "Zone parents form a cycle, or a nested zone has a lower tier than its parent."),
    rule("S005", E, "value-check", "A port, port range or TLS version is out of range, or a flow has no ports."),
    rule("B001", E, "unbound", "A node or zone has no selector, so no runtime endpoint can be bound to it."),
    rule("B002", E, "ambiguous-selectors", "Two node selectors can match the same endpoint."),
    rule("B003", E, "node-outside-zone", "A node's selector is not contained in its zone's selector."),
    rule(
        "B004",
        E,
        "external-overlaps-internal",
        "An external zone's or node's CIDRs overlap an internal zone's CIDRs.",
    ),
    rule(
        "B005",
        W,
        "local-only-binding",
        "A node is bound only by local-end fields (executables, images, cgroups, units) and cannot be recognised as a remote peer.",
    ),
    rule(
        "B006",
        E,
        "catch-all",
        "A node outside an external zone matches every address, or a flow approves every port, without `acknowledgeCatchAll`.",
    ),
    rule("X001", E, "upward-without-authn", "A crossing from a lower to a higher tier has no authn checkpoint."),
    rule("X002", E, "tier-skipping", "A crossing skips a tier (e.g. T1 to T3)."),
    rule("X003", E, "sensitive-unencrypted", "Personal data on a flow whose encryption.required is none."),
    rule("X004", E, "data-above-max", "A flow carries a data class above the destination's maxData."),
    rule("X005", W, "no-rate-limit", "A flow from an external zone has no rate-limit checkpoint."),
    rule("X006", W, "no-schema-validation", "An upward HTTP/gRPC crossing has no schema-validation checkpoint."),
    rule(
        "X007",
        E,
        "checkpoint-misplaced",
        "A checkpoint is listed on a flow whose ends do not include its enforcedBy node.",
    ),
    rule("X008", W, "unencrypted-crossing", "A zone crossing or egress to an external zone is not encrypted."),
    rule(
        "X012",
        E,
        "personal-data-to-external-unapproved",
        "Personal data flows to an external zone without an approval ticket.",
    ),
    rule(
        "X013",
        E,
        "authn-in-cleartext",
        "A flow with an authn checkpoint requires no encryption, so credentials travel in clear.",
    ),
    rule("H001", E, "approval-expired", "A flow's approval has expired."),
    rule("H002", W, "orphan", "A node without flows, or a zone, data class, checkpoint or tier that nothing uses."),
    rule(
        "L001",
        E,
        "left-to-review",
        "A decision `dfdwatch learn` left to a person: an item whose description starts with TODO.",
    ),
];

/// Categories of the CAPITALS zero-trust threat taxonomy (edgeroute/zttm, by Chris Romeo,
/// CC BY-SA 4.0; only the category names are reused here, with our own mapping to rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capitals {
    /// C: Compromise & Exploit.
    CompromiseExploit,
    /// A: Authentication & Session Management.
    Authentication,
    /// P: Poisoning.
    Poisoning,
    /// I: Information Disclosure.
    InformationDisclosure,
    /// T: Tampering.
    Tampering,
    /// A: Authorization.
    Authorization,
    /// L: Lack of Logging.
    LackOfLogging,
    /// S: Segmentation, visibility breakdown, and DoS.
    Segmentation,
}

impl Capitals {
    /// The category name.
    pub fn name(self) -> &'static str {
        match self {
            Capitals::CompromiseExploit => "Compromise & Exploit",
            Capitals::Authentication => "Authentication & Session Management",
            Capitals::Poisoning => "Poisoning",
            Capitals::InformationDisclosure => "Information Disclosure",
            Capitals::Tampering => "Tampering",
            Capitals::Authorization => "Authorization",
            Capitals::LackOfLogging => "Lack of Logging",
            Capitals::Segmentation => "Segmentation, visibility breakdown, and DoS",
        }
    }
}

/// The CAPITALS category a rule is about, for security rules (structure rules have none).
pub fn capitals(id: &str) -> Option<Capitals> {
    Some(match id {
        "X001" | "X013" => Capitals::Authentication,
        "X003" | "X004" | "X012" => Capitals::InformationDisclosure,
        "X006" => Capitals::Poisoning,
        "X007" | "H001" => Capitals::Authorization,
        "X008" => Capitals::Tampering,
        "X002" | "X005" | "B002" | "B003" | "B004" | "B006" => Capitals::Segmentation,
        "B001" | "B005" => Capitals::LackOfLogging,
        _ => return None,
    })
}

/// The rule with this id, if it exists.
pub fn find(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

/// The default severity of a rule id (error for an unknown id, which only a bug can produce).
pub fn default_severity(id: &str) -> Severity {
    find(id).map_or(Severity::Error, |r| r.severity)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_unique_and_sorted_by_family() {
        let mut ids: Vec<_> = super::RULES.iter().map(|r| r.id).collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }
}
