// Package iptables plans, applies, verifies and removes the rules that send a
// pod's IMDS traffic to the imds-proxy sidecar: the redirect in the nat table,
// and a guard in the filter table that refuses, with a TCP reset, every
// other connection to the metadata service the redirect did not take.
//
// The rules are data: Plan turns a Config into a Ruleset without any I/O, and
// Ruleset.String renders it for dry runs and golden tests. Apply, Check and
// Cleanup execute a Ruleset through the narrow Applier interface, which the
// caller implements (cmd/init wires it to github.com/coreos/go-iptables), so
// this package never runs a command itself and tests can substitute a fake.
//
// Every rule lives in chains named with ChainPrefix; the built-in OUTPUT chain
// of each table only receives a single jump, always at position 1. The
// invariants the code keeps, and why, are in docs/iptables.md.
package iptables
