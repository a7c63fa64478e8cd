// Package cli is the command-line plumbing the proxy and proxy-init share:
// how an option may be spelled, which environment variable it falls back
// to, and what becomes of options a binary does not define.
//
// Spelling. Go's flag package, which the upstream azure-workload-identity
// proxy uses, accepts every option with one dash or two
// ("-proxy-port=8000", "--proxy-port 8000"), and manifests written for that
// proxy carry the one-dash form. pflag reads "-proxy-port=8000" as a
// cluster of one-letter shorthands instead. Normalize rewrites a command
// line so that pflag reads it as Go's flag package would: every option the
// flag set defines is spelled with two dashes, option values and positional
// arguments are left exactly as they were, and nothing after "--" is
// touched. The commands define no one-letter shorthands; cobra's -h for
// --help is the one that exists, and Normalize spells it --help.
//
// Environment. Env binds a flag to the variable it falls back to, says so
// in the usage text, and applies the variables the command line did not
// override. A secret comes from a variable only, never from a flag
// (Env.Secret). An empty variable counts as unset in both commands.
//
// Unknown options. Normalize reports every option the flag set does not
// define, as given and without its value (values may be secrets). Each
// command decides what they mean: the proxy ignores them with a warning (a
// webhook newer than the image must not stop the sidecar), proxy-init
// refuses them.
package cli
