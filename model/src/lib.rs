//! The TSEM security model: mapping events to security state coefficients
//! under the Quixote (Q) and kernel (K) profiles, and the model built from them.
#![warn(missing_docs)]

pub mod digest;
mod fields;
mod kernel;
pub mod mapped;
pub mod modelfile;
pub mod profile;
mod quixote;
pub mod signature;
pub mod state;
pub mod views;

pub use digest::{pseudonym_of, Coefficient, Digest, ZERO_DIGEST};
pub use fields::MapError;
pub use mapped::{map_line, Mapped, NoObserver, Observer};
pub use modelfile::{LoadReport, ModelFileError};
pub use profile::{Mapper, Profile, PseudonymFileError, Pseudonyms};
pub use state::{extend, Model, ModelError, Outcome, Point};
