//! security-headers filter (glue).
