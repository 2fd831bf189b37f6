//! A webhook receiver on 127.0.0.1 (axum) that records the JSON bodies it is sent and fails
//! the first requests as told: the far end of the operator's alert notifications.

use std::sync::{Arc, Mutex};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use serde_json::Value;

/// Records bodies; answers `fail_status` to the first `fail_first` requests, 200 after.
#[derive(Clone)]
pub struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
    hits: Arc<Mutex<u32>>,
    fail_first: u32,
    fail_status: StatusCode,
}

impl Receiver {
    /// Starts one; returns it and its URL (`http://127.0.0.1:<port>/hook`).
    pub async fn start(fail_first: u32, fail_status: StatusCode) -> (Self, String) {
        let r = Self {
            bodies: Arc::default(),
            hits: Arc::default(),
            fail_first,
            fail_status,
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, url)
    }

    /// Requests received, failed ones included.
    pub fn hits(&self) -> u32 {
        *self.hits.lock().unwrap()
    }

    /// Bodies of the requests it accepted, in order.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

async fn receive(State(r): State<Receiver>, Json(body): Json<Value>) -> StatusCode {
    let n = {
        let mut hits = r.hits.lock().unwrap();
        *hits += 1;
        *hits
    };
    if n <= r.fail_first {
        return r.fail_status;
    }
    r.bodies.lock().unwrap().push(body);
    StatusCode::OK
}
