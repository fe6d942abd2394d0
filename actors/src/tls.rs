//! The process's one rustls crypto provider (ring). reqwest and tungstenite are built
//! without one of their own, so a client built before it is installed panics; every client
//! the engine builds calls this first, and a binary may call it at start.

/// Installs ring as the process default, once; later calls (and a provider someone else
/// installed first) leave it as it is.
pub fn install_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
