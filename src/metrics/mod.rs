//! Prometheus metrics for `live --metrics ADDR:PORT`: the text exposition format (families with
//! HELP and TYPE, labels escaped) and a small HTTP server that answers `GET /metrics` with the
//! latest snapshot the live sink published. (Being written.)
