//! The HTTP API of Smart AI Hub and everything the `aihub` binary runs.
//!
//! # Layout
//!
//! - [`config`]: typed, layered, validated settings.
//! - [`app`]: [`app::Application`], which builds every role (HTTP, relay, projectors,
//!   sweeper) from settings and runs them until shutdown; tests bind it to port 0.
//! - [`routes`]: handlers, each stating which roles it allows.
//! - [`auth`]: bearer JWTs and roles. [`error`]: the one mapping of failures to HTTP.
//! - [`stripe`]: payments settings, the Stripe Checkout call and webhook verification.
//! - [`bench`]: the load harness behind `aihub bench`.

pub mod app;
pub mod auth;
pub mod bench;
pub mod bootstrap;
pub mod config;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod mail;
pub mod oidc;
pub mod routes;
pub mod secrets;
pub mod sessions;
pub mod state;
pub mod stripe;
pub mod telemetry;

pub use app::{Application, Roles};
pub use config::Settings;
