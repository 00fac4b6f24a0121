//! Placeholder while the sample applications are written.
