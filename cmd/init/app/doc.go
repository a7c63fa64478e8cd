// Package app implements the proxy-init command: it reads flags and the
// environment, validates them into an iptables.Config, picks the iptables
// backend, wires github.com/coreos/go-iptables to the iptables.Applier
// interface, and maps the outcome to an exit code and a termination message.
package app
