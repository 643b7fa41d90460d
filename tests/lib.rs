//! Shared support for the integration tests lives in `support/`; this library is empty.
