//! Weighted backends of one route rule, for Gateway API `HTTPRoute` and Istio `VirtualService`.
//!
//! Routes are read and patched as plain JSON (`DynamicObject`s): the operator depends on neither
//! the routers' controllers nor their Rust types. What differs between route kinds is behind the
//! small [`Router`] interface (one file per router, like Argo Rollouts' traffic routers); finding
//! the rule, moving weight and building the guarded patch are shared here.

mod httproute;
mod virtualservice;

use serde_json::{Value, json};

pub use httproute::HttpRoute;
pub use virtualservice::VirtualService;

use super::{Change, Error, Kind, Objects, Record, Request, json};
use crate::api::{BackendRef, RouteRef};

/// What differs between route kinds.
pub trait Router: Sync {
    fn kind(&self) -> Kind;
    /// Member of `spec` that lists the rules (`rules`, `http`).
    fn rules_member(&self) -> &'static str;
    /// Member of a rule that lists its weighted backends (`backendRefs`, `route`).
    fn backends_member(&self) -> &'static str;
    /// Whether a backend entry sends to Service `name` (on `port`, when given) of `namespace`.
    fn is_backend(&self, entry: &Value, name: &str, port: Option<u16>, namespace: &str) -> bool;
    /// The weight of an entry as the data plane reads it: an absent weight has a meaning.
    fn weight(&self, entry: &Value, entries: usize) -> u64;
    /// A new entry sending `weight` to `backend`.
    fn entry(&self, backend: &BackendRef, weight: u64) -> Value;
}

/// The router and route name a [`RouteRef`] points to.
pub fn router(route: &RouteRef) -> Result<(&'static dyn Router, &str), Error> {
    match (&route.http_route, &route.virtual_service) {
        (Some(name), None) => Ok((&HttpRoute, name)),
        (None, Some(name)) => Ok((&VirtualService, name)),
        _ => Err(Error::InvalidSpec(
            "set exactly one of httpRoute or virtualService".into(),
        )),
    }
}

/// The router of an action's kind, when it is a route.
pub fn router_of(kind: Kind) -> Option<&'static dyn Router> {
    match kind {
        Kind::HttpRoute => Some(&HttpRoute),
        Kind::VirtualService => Some(&VirtualService),
        _ => None,
    }
}

/// Reads the route a [`RouteRef`] names (the observe half of every route rung).
pub async fn read(objects: &impl Objects, route: &RouteRef) -> Result<Value, Error> {
    let (router, name) = router(route)?;
    objects.get(router.kind(), name).await
}

/// The rule a [`RouteRef`] selects, found in the route as read: what the route rungs plan from.
pub struct Located<'a> {
    pub router: &'static dyn Router,
    /// The route's name.
    pub name: &'a str,
    pub namespace: &'a str,
    pub rule: Rule,
}

/// Finds the rule `route` selects in `object` (the route as read).
pub fn locate<'a>(route: &'a RouteRef, object: &'a Value) -> Result<Located<'a>, Error> {
    let (router, name) = router(route)?;
    Ok(Located {
        router,
        name,
        namespace: json::str_at(object, "/metadata/namespace").unwrap_or_default(),
        rule: find_rule(router, object, &RuleSelector::of(route))?,
    })
}

impl Located<'_> {
    /// Refuses a backend the rule does not list.
    pub fn require(&self, backend: Backend) -> Result<(), Error> {
        match weight_of(self.router, &self.rule.backends, backend, self.namespace) {
            Some(_) => Ok(()),
            None => Err(Error::BackendNotFound {
                kind: self.router.kind().to_string(),
                name: self.name.to_owned(),
                rule: self.rule.label(),
                backend: backend.name.to_owned(),
            }),
        }
    }

    /// [`move_weight`] on this rule.
    pub fn move_weight(
        &self,
        from: Backend,
        keep: u64,
        to: Option<&BackendRef>,
    ) -> Option<Vec<Value>> {
        move_weight(
            self.router,
            &self.rule.backends,
            from,
            keep,
            to,
            self.namespace,
        )
    }

    /// The change setting this rule's backends to `new`, summarised as `what` (e.g. "circuit
    /// open") with the weights that move.
    pub fn change(&self, what: &str, new: Vec<Value>) -> Change {
        let summary = format!(
            "{what} on {} {} rule {}: {}",
            self.router.kind(),
            self.name,
            self.rule.label(),
            describe(self.router, &self.rule.backends, &new)
        );
        change(self.router, self.name, &self.rule, new, summary)
    }
}

/// Which rule of a route: by name when given, else by index (default 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleSelector {
    Index(usize),
    Name(String),
}

impl RuleSelector {
    pub fn of(route: &RouteRef) -> Self {
        match &route.rule_name {
            Some(name) => Self::Name(name.clone()),
            None => Self::Index(route.rule_index.unwrap_or(0) as usize),
        }
    }
}

impl std::fmt::Display for RuleSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Index(i) => write!(f, "{i}"),
            Self::Name(n) => write!(f, "{n:?}"),
        }
    }
}

/// One rule of a route as read.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub index: usize,
    pub name: Option<String>,
    pub backends: Vec<Value>,
}

impl Rule {
    /// How the rule is named in messages: `0` or `0 ("main")`.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{} ({n:?})", self.index),
            None => self.index.to_string(),
        }
    }
}

/// Finds a rule of `route` (the whole object as JSON).
pub fn find_rule(router: &dyn Router, route: &Value, select: &RuleSelector) -> Result<Rule, Error> {
    let rules = route
        .pointer(&format!("/spec/{}", router.rules_member()))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let rule_name = |r: &Value| r.get("name").and_then(Value::as_str).map(str::to_owned);
    let found = match select {
        RuleSelector::Index(i) => rules.get(*i).map(|r| (*i, r)),
        RuleSelector::Name(n) => rules
            .iter()
            .enumerate()
            .find(|(_, r)| rule_name(r).as_deref() == Some(n)),
    };
    let (index, rule) = found.ok_or_else(|| Error::RuleNotFound {
        kind: router.kind().to_string(),
        name: json::name(route).to_owned(),
        rule: select.to_string(),
    })?;
    Ok(Rule {
        index,
        name: rule_name(rule),
        backends: rule
            .get(router.backends_member())
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    })
}

/// A backend of a rule by Service name (and port).
#[derive(Clone, Copy, Debug)]
pub struct Backend<'a> {
    pub name: &'a str,
    pub port: Option<u16>,
}

impl<'a> From<&'a BackendRef> for Backend<'a> {
    fn from(b: &'a BackendRef) -> Self {
        Backend {
            name: &b.name,
            port: b.port,
        }
    }
}

/// Total weight of the entries of `backend`, or None when the rule has none.
pub fn weight_of(
    router: &dyn Router,
    backends: &[Value],
    backend: Backend,
    namespace: &str,
) -> Option<u64> {
    let n = backends.len();
    let mut found = false;
    let total = backends
        .iter()
        .filter(|e| router.is_backend(e, backend.name, backend.port, namespace))
        .inspect(|_| found = true)
        .map(|e| router.weight(e, n))
        .sum();
    found.then_some(total)
}

/// Sum of the weights of a rule.
pub fn total_weight(router: &dyn Router, backends: &[Value]) -> u64 {
    backends
        .iter()
        .map(|e| router.weight(e, backends.len()))
        .sum()
}

/// Takes weight from `from` until it keeps `keep` in total, and gives it to `to`: its existing
/// entry, or a new one appended to the rule. With no `to`, the weight is dropped.
///
/// Returns None when nothing moves (already done). Otherwise every entry of the result carries
/// an explicit weight, so that adding an entry cannot change what an implicit weight means.
pub fn move_weight(
    router: &dyn Router,
    backends: &[Value],
    from: Backend,
    keep: u64,
    to: Option<&BackendRef>,
    namespace: &str,
) -> Option<Vec<Value>> {
    let n = backends.len();
    let mut out: Vec<Value> = backends.to_vec();
    for e in &mut out {
        let w = router.weight(e, n);
        e["weight"] = json!(w);
    }
    let mut keep_left = keep;
    let mut moved = 0;
    for e in &mut out {
        if !router.is_backend(e, from.name, from.port, namespace) {
            continue;
        }
        let w = e["weight"].as_u64().unwrap_or(0);
        let kept = w.min(keep_left);
        keep_left -= kept;
        moved += w - kept;
        e["weight"] = json!(kept);
    }
    if moved == 0 {
        return None;
    }
    if let Some(to) = to {
        match out
            .iter_mut()
            .find(|e| router.is_backend(e, &to.name, to.port, namespace))
        {
            Some(e) => e["weight"] = json!(e["weight"].as_u64().unwrap_or(0) + moved),
            None => out.push(router.entry(to, moved)),
        }
    }
    Some(out)
}

/// The change replacing the backends of `rule` with `new`: a JSON Patch guarded by a `test` of
/// the backends as read (and of the rule's name), so a concurrent edit fails instead of being
/// overwritten.
pub fn change(
    router: &dyn Router,
    route_name: &str,
    rule: &Rule,
    new: Vec<Value>,
    summary: String,
) -> Change {
    let request = Request::JsonPatch(guarded_replace(router, rule, &rule.backends, &new));
    let record = Record::RouteBackends {
        rule_index: rule.index,
        rule_name: rule.name.clone(),
        backends: rule.backends.clone(),
        applied: new,
    };
    Change::new(router.kind(), route_name, request, summary, record)
}

fn guarded_replace(
    router: &dyn Router,
    rule: &Rule,
    current: &[Value],
    new: &[Value],
) -> json_patch::Patch {
    let rule_path = format!("/spec/{}/{}", router.rules_member(), rule.index);
    let path = format!("{rule_path}/{}", router.backends_member());
    let mut ops = vec![];
    if let Some(name) = &rule.name {
        ops.push(json!({"op": "test", "path": format!("{rule_path}/name"), "value": name}));
    }
    if current.is_empty() {
        // The member may be absent: "add" creates or replaces it.
        ops.push(json!({"op": "add", "path": path, "value": new}));
    } else {
        ops.push(json!({"op": "test", "path": path, "value": current}));
        ops.push(json!({"op": "replace", "path": path, "value": new}));
    }
    json::patch(ops)
}

/// The field a rule's backends live in, for messages: `spec.rules[0].backendRefs`.
pub fn field(router: &dyn Router, index: usize) -> String {
    format!(
        "spec.{}[{index}].{}",
        router.rules_member(),
        router.backends_member()
    )
}

/// Words for a weight change: `web 100→0, web-maintenance 0→100`.
pub fn describe(router: &dyn Router, before: &[Value], after: &[Value]) -> String {
    let label = |e: &Value| {
        let name = e
            .get("name")
            .or_else(|| e.pointer("/destination/host"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        name.to_owned()
    };
    let changed = after.iter().enumerate().filter_map(|(i, a)| {
        let new = router.weight(a, after.len());
        let old = before.get(i).map_or(0, |b| router.weight(b, before.len()));
        (i >= before.len() || old != new).then(|| format!("{} {old}→{new}", label(a)))
    });
    let removed = before
        .iter()
        .skip(after.len())
        .map(|b| format!("{} removed", label(b)));
    changed.chain(removed).collect::<Vec<_>>().join(", ")
}

/// Plans restoring the backends recorded by a [`Record::RouteBackends`], given the route now.
pub(super) fn plan_undo(
    router: &dyn Router,
    route: &Value,
    rule_index: usize,
    rule_name: Option<&str>,
    previous: &[Value],
    applied: &[Value],
    force: bool,
) -> Result<Option<Change>, Error> {
    let select = match rule_name {
        Some(n) => RuleSelector::Name(n.to_owned()),
        None => RuleSelector::Index(rule_index),
    };
    let rule = find_rule(router, route, &select)?;
    if rule.backends == previous {
        return Ok(None);
    }
    if !force && rule.backends != applied {
        return Err(Error::ChangedSinceApplied {
            kind: router.kind().to_string(),
            name: json::name(route).to_owned(),
            field: field(router, rule.index),
            expected: Value::from(applied.to_vec()).to_string(),
            found: Value::from(rule.backends.clone()).to_string(),
        });
    }
    let summary = format!(
        "rule {}: restored {}",
        rule.label(),
        describe(router, &rule.backends, previous)
    );
    let request = Request::JsonPatch(guarded_replace(router, &rule, &rule.backends, previous));
    let record = Record::RouteBackends {
        rule_index: rule.index,
        rule_name: rule.name.clone(),
        backends: rule.backends.clone(),
        applied: previous.to_vec(),
    };
    Ok(Some(Change::new(
        router.kind(),
        json::name(route),
        request,
        summary,
        record,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"rules": [
                {"backendRefs": [{"name": "web", "port": 80}]},
                {"name": "canary", "backendRefs": [
                    {"name": "web-canary", "port": 80, "weight": 30},
                    {"name": "web-stable", "port": 80, "weight": 70}
                ]}
            ]}
        })
    }

    #[test]
    fn rules_by_index_or_name() {
        let r = find_rule(&HttpRoute, &route(), &RuleSelector::Index(0)).unwrap();
        assert_eq!((r.index, r.name.as_deref(), r.backends.len()), (0, None, 1));
        let r = find_rule(&HttpRoute, &route(), &RuleSelector::Name("canary".into())).unwrap();
        assert_eq!((r.index, r.label()), (1, "1 (\"canary\")".to_owned()));
        for missing in [RuleSelector::Index(2), RuleSelector::Name("nope".into())] {
            let err = find_rule(&HttpRoute, &route(), &missing).unwrap_err();
            assert!(matches!(err, Error::RuleNotFound { .. }), "{err}");
            assert!(err.to_string().contains("HTTPRoute web"), "{err}");
        }
    }

    #[test]
    fn moving_weight_keeps_the_rest_and_makes_weights_explicit() {
        let r = find_rule(&HttpRoute, &route(), &RuleSelector::Index(1)).unwrap();
        let from = Backend {
            name: "web-canary",
            port: None,
        };
        let to = BackendRef {
            name: "web-stable".into(),
            port: None,
        };
        let out = move_weight(&HttpRoute, &r.backends, from, 10, Some(&to), "shop").unwrap();
        assert_eq!(out[0]["weight"], 10);
        assert_eq!(out[1]["weight"], 90);
        assert_eq!(out[0]["port"], 80, "other fields are kept");
        // Nothing left to move: no change.
        assert!(move_weight(&HttpRoute, &out, from, 10, Some(&to), "shop").is_none());

        // An implicit weight (1 for HTTPRoute) becomes explicit; a new entry is appended.
        let r = find_rule(&HttpRoute, &route(), &RuleSelector::Index(0)).unwrap();
        let fallback = BackendRef {
            name: "maintenance".into(),
            port: Some(8080),
        };
        let from = Backend {
            name: "web",
            port: None,
        };
        let out = move_weight(&HttpRoute, &r.backends, from, 0, Some(&fallback), "shop").unwrap();
        assert_eq!(
            out,
            vec![
                json!({"name": "web", "port": 80, "weight": 0}),
                json!({"name": "maintenance", "port": 8080, "weight": 1})
            ]
        );
        // Dropped when there is nowhere to send it.
        let out = move_weight(&HttpRoute, &r.backends, from, 0, None, "shop").unwrap();
        assert_eq!(out, vec![json!({"name": "web", "port": 80, "weight": 0})]);
    }

    #[test]
    fn the_patch_is_guarded_by_the_backends_read() {
        let r = find_rule(&HttpRoute, &route(), &RuleSelector::Name("canary".into())).unwrap();
        let new = vec![json!({"name": "web-stable", "port": 80, "weight": 100})];
        let c = change(&HttpRoute, "web", &r, new.clone(), "s".into());
        let Request::JsonPatch(patch) = &c.request else {
            panic!("JSON patch expected")
        };
        let mut doc = route();
        json_patch::patch(&mut doc, patch).unwrap();
        assert_eq!(doc["spec"]["rules"][1]["backendRefs"], json!(new));
        assert_eq!(doc["spec"]["rules"][0], route()["spec"]["rules"][0]);

        // A concurrent edit of the backends, or a reordering of rules, fails the patch.
        let mut edited = route();
        edited["spec"]["rules"][1]["backendRefs"][0]["weight"] = json!(50);
        assert!(json_patch::patch(&mut edited, patch).is_err());
        let mut reordered = route();
        reordered["spec"]["rules"].as_array_mut().unwrap().reverse();
        assert!(json_patch::patch(&mut reordered, patch).is_err());

        let record: Record = serde_json::from_value(c.action.previous.unwrap()).unwrap();
        assert_eq!(
            record,
            Record::RouteBackends {
                rule_index: 1,
                rule_name: Some("canary".into()),
                backends: r.backends,
                applied: new
            }
        );
    }

    #[test]
    fn undo_restores_or_refuses() {
        let r = find_rule(&HttpRoute, &route(), &RuleSelector::Index(1)).unwrap();
        let applied = vec![json!({"name": "web-stable", "port": 80, "weight": 100})];
        let mut now = route();
        now["spec"]["rules"][1]["backendRefs"] = json!(applied);

        let c = plan_undo(
            &HttpRoute,
            &now,
            1,
            Some("canary"),
            &r.backends,
            &applied,
            false,
        )
        .unwrap()
        .expect("a change");
        let Request::JsonPatch(p) = &c.request else {
            panic!()
        };
        let mut doc = now.clone();
        json_patch::patch(&mut doc, p).unwrap();
        assert_eq!(doc, route());

        // Already restored: nothing to do.
        assert!(
            plan_undo(
                &HttpRoute,
                &route(),
                1,
                Some("canary"),
                &r.backends,
                &applied,
                false
            )
            .unwrap()
            .is_none()
        );

        // Changed since: refused, naming the field, unless forced.
        now["spec"]["rules"][1]["backendRefs"][0]["weight"] = json!(99);
        let err = plan_undo(
            &HttpRoute,
            &now,
            1,
            Some("canary"),
            &r.backends,
            &applied,
            false,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("spec.rules[1].backendRefs"),
            "{err}"
        );
        assert!(
            plan_undo(
                &HttpRoute,
                &now,
                1,
                Some("canary"),
                &r.backends,
                &applied,
                true
            )
            .unwrap()
            .is_some()
        );
    }
}
