//! The `aihub` program: settings in, roles running.
//!
//! The only crate that depends on every other: it builds the [`hub_app::Hub`], the HTTP
//! adapter ([`hub_api`]), the relay ([`hub_nats`]), the projectors ([`hub_projections`]), the
//! reservation sweeper ([`hub_commands`]) and the inference workers ([`hub_workers`]), and
//! runs the ones this process was asked to run until shutdown.
//!
//! # Layout
//!
//! - [`analytics`]: the analysts' commands (`aihub events`, `aihub usage export`), writing
//!   what their HTTP routes answer.
//! - [`audit`]: the auditors' commands (`aihub audit verify`, `checkpoint`, `verify-proof`).
//! - [`application`]: [`Application`], which builds every role from settings and runs them
//!   until shutdown; tests bind it to port 0.
//! - [`telemetry`]: the log subscriber (stderr, filtered by `RUST_LOG`, text or one JSON
//!   object per line), set up once per process.

pub mod analytics;
pub mod application;
pub mod audit;
pub mod telemetry;

pub use application::{connect, Application, Roles};
pub use hub_app::Settings;
