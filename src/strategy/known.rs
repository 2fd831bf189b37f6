//! An object already read, handed to a planner in place of its first read: a remediation reads
//! its target several times in a row (the superseded check, the GitOps hold, the plan), and in
//! an incident storm every repeated GET waits on the API budget.

use std::sync::Mutex;

use serde_json::Value;

use super::{Error, Kind, Objects};

/// `objects`, except that the first read of (`kind`, `name`) answers `value` (an object, or
/// the error its read ended in, such as not found). Later reads go through: a plan retried
/// after a conflict must see the object as it is now.
pub struct Known<'a, O> {
    objects: &'a O,
    kind: Kind,
    name: String,
    value: Mutex<Option<Result<Value, Error>>>,
}

impl<'a, O: Objects> Known<'a, O> {
    pub fn new(
        objects: &'a O,
        kind: Kind,
        name: &str,
        value: Option<Result<Value, Error>>,
    ) -> Self {
        Self {
            objects,
            kind,
            name: name.to_owned(),
            value: Mutex::new(value),
        }
    }
}

impl<O: Objects> Objects for Known<'_, O> {
    async fn get(&self, kind: Kind, name: &str) -> Result<Value, Error> {
        if kind == self.kind && name == self.name {
            let known = self.value.lock().expect("lock").take();
            if let Some(value) = known {
                return value;
            }
        }
        self.objects.get(kind, name).await
    }

    async fn list(&self, kind: Kind, labels: Option<&str>) -> Result<Vec<Value>, Error> {
        self.objects.list(kind, labels).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;

    struct Counting(AtomicUsize);

    impl Objects for Counting {
        async fn get(&self, _kind: Kind, name: &str) -> Result<Value, Error> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(json!({"read": name}))
        }
        async fn list(&self, _kind: Kind, _labels: Option<&str>) -> Result<Vec<Value>, Error> {
            Ok(vec![])
        }
    }

    #[tokio::test]
    async fn answers_the_first_read_then_reads_through() {
        let inner = Counting(AtomicUsize::new(0));
        let known = Known::new(
            &inner,
            Kind::Deployment,
            "web",
            Some(Ok(json!({"known": 1}))),
        );
        assert_eq!(
            known.get(Kind::Deployment, "web").await.unwrap(),
            json!({"known": 1})
        );
        assert_eq!(inner.0.load(Ordering::SeqCst), 0);
        // Another object, or the same one again, is read.
        assert_eq!(
            known.get(Kind::Service, "web").await.unwrap(),
            json!({"read": "web"})
        );
        assert_eq!(
            known.get(Kind::Deployment, "web").await.unwrap(),
            json!({"read": "web"})
        );
        assert_eq!(inner.0.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn without_a_value_every_read_goes_through() {
        let inner = Counting(AtomicUsize::new(0));
        let known = Known::new(&inner, Kind::Deployment, "web", None);
        known.get(Kind::Deployment, "web").await.unwrap();
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
    }
}
