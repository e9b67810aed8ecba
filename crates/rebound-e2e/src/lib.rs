//! Home of rebound's end-to-end tests: the integration tests in `tests/` that run several
//! services (producer, consumer, scheduler) together in-process against a real broker, each
//! started and stopped with `rebound_testkit::RunningService`. Tests of one service stay in that
//! service's crate. The library itself is empty.
