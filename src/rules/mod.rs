//! Vendor rules: the model, the TOML loader and the name matcher.

pub mod load;
pub mod matcher;
pub mod model;
