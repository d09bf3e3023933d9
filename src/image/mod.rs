//! Images: references, sources (OCI layouts and archives), the content-addressed store,
//! and the layer unpacker.

pub mod digest;
pub mod layer;
pub mod oci;
pub mod reference;
pub mod unpack;
pub mod source;
pub mod lock;
pub mod store;
