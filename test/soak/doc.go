// Package soak runs the real proxy for a long time under mixed load while
// faults come and go, and checks that it ends as it started: every answer
// well-formed and of an expected status, no connection refused (but by
// proxy-init's guard, right after the node's IMDS refused) or left
// unanswered, no app connection past the redirect to the node's IMDS,
// resident memory, goroutines and open file descriptors back within 10 %
// of their values after the warm-up, and not one byte of a token, an
// assertion or an Authorization header in any log.
//
// One pod-shaped environment (internal/podenv) holds the real proxy-init
// rules, the proxy as UID 1501 and the Entra emulator. Inside the pod:
//
//   - raw workers, in this process, send hand-written requests through the
//     redirect: tokens for a hot resource and a rotating set of cold ones,
//     another identity, unknown client ids, forced refreshes, requests
//     without Metadata, disguised identity paths, X-Forwarded-For, declared
//     bodies, pipelined requests, passthrough to the node's IMDS, and token
//     requests carrying an Authorization header (which the proxy must
//     ignore and never log);
//   - the benchmark's load generator (test/bench/cmd/imds-loadgen) in short
//     bursts, as an app UID;
//   - real clients: curl, and the Go client of the e2e suite (azidentity and
//     MSAL Go), each a fresh process as an app UID.
//
// The schedule is cut into intervals (30 s for a 10-minute run, scaled
// down for shorter ones): the first is the warm-up, then a fault is
// switched on for one interval and off for the next, in turn (Entra
// answering 503, slow, throttling, refusing connections, dropping them, an
// untrusted certificate, the token file gone, the node's IMDS down and
// slow), and the projected token is rotated every interval, as kubelet
// does. A table row is printed at the start, after the warm-up, every
// tenth of the run and at the end; the warm-up and end rows are taken with
// the load paused, so they compare like with like.
package soak
