//! The application layer of Smart AI Hub: what the hub does, whatever the transport.
//!
//! HTTP handlers (and the WebSocket, and the command line) parse and authorize, then call one
//! function here and map its answer. Nothing here knows HTTP.
//!
//! # Layout
//!
//! - [`config`]: typed, layered, validated settings.
//! - [`hub`]: [`Hub`], the services every caller reaches, built once per process.
//! - [`inference`]: submitting a chat request — estimate, reserve, publish, read the answer back.
//! - [`identity`]: registration, sign-in, email verification, password reset, Google sign-in.
//! - [`keys`]: API keys — create, list, revoke, and resolve a presented key to its owner.
//! - [`sessions`]: refresh-token families and login throttling.
//! - [`bootstrap`]: the first admin.

pub mod bootstrap;
pub mod config;
pub mod hub;
pub mod identity;
pub mod inference;
pub mod keys;
pub mod sessions;

pub use config::Settings;
pub use hub::Hub;
