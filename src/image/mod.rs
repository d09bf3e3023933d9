//! Images: references, sources (OCI layouts and archives), the content-addressed store,
//! and the layer unpacker.

pub mod digest;
pub mod layer;
pub mod lock;
pub mod oci;
pub mod reference;
pub mod registry;
pub mod source;
pub mod store;
pub mod unpack;
