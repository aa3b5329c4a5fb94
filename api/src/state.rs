//! The state every handler receives: the application's [`Hub`](hub_app::Hub).

/// Handlers take `State<Arc<AppState>>`.
pub use hub_app::Hub as AppState;
