package cli

import (
	"strings"

	"github.com/spf13/pflag"
)

// kind says what one argument of a command line is.
type kind int

const (
	// option is an option the flag set defines: "--name" or "--name=value".
	option kind = iota
	// value is the argument the option before it takes as its value.
	value
	// positional is an argument that is not an option.
	positional
	// terminator is "--": every argument after it is positional.
	terminator
	// unknown is an option the flag set does not define, or a malformed
	// one such as "---x" or "--=x".
	unknown
	// unknownValue is the argument an unknown option takes as its value.
	unknownValue
)

// token is one argument of a command line, sorted.
type token struct {
	// arg is the argument as given.
	arg string
	// out is the argument as passed on: an option spelled with two dashes,
	// anything else unchanged.
	out  string
	kind kind
	// name is, for an option, the flag's name; for an unknown option, the
	// option as given without its value.
	name string
}

// Args is a command line sorted against a flag set by Normalize.
type Args struct {
	tokens []token
}

// Normalize sorts argv against fs the way Go's flag package reads a command
// line, and respells every option with two dashes, so that pflag (which
// reads "-name" as one-letter shorthands) parses the result the same way:
//
//   - "-name", "-name=value" and "-name value" (for an option that is not a
//     boolean) mean what their two-dash forms mean;
//   - an option that takes a value and is given without "=" takes the next
//     argument as its value, whatever it looks like ("--log-level -x" sets
//     the log level to "-x"), and that value is passed on unchanged;
//   - "--" ends the options, and every argument after it is passed on
//     unchanged; so is every positional argument, and parsing goes on after
//     one, as cobra's does;
//   - "-h" (or "--h", as Go's flag package takes it) is cobra's shorthand
//     for --help, and is spelled --help; the commands define no other
//     shorthand, so "-hv" is the unknown long option "hv", never a cluster
//     of shorthands;
//   - an option fs does not define, or a malformed one ("---x", "--=x"), is
//     unknown. Without "=value" it takes the next argument as its value
//     unless that starts with a dash, which is what pflag does when it is
//     told to ignore unknown options.
//
// fs is only read. Normalize never fails; Args says what it found.
func Normalize(fs *pflag.FlagSet, argv []string) Args {
	tokens := make([]token, 0, len(argv))
	for i := 0; i < len(argv); i++ {
		arg := argv[i]
		if arg == "--" {
			tokens = append(tokens, token{arg: arg, out: arg, kind: terminator})
			for _, rest := range argv[i+1:] {
				tokens = append(tokens, token{arg: rest, out: rest, kind: positional})
			}
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			tokens = append(tokens, token{arg: arg, out: arg, kind: positional})
			continue
		}
		dashes := 1
		if arg[1] == '-' {
			dashes = 2
		}
		name, val, hasVal := strings.Cut(arg[dashes:], "=")
		f := lookup(fs, name)
		if f == nil {
			tokens = append(tokens, token{arg: arg, out: respellUnknown(arg, name, dashes), kind: unknown, name: unknownName(arg, name, hasVal)})
			if !hasVal && i+1 < len(argv) && !strings.HasPrefix(argv[i+1], "-") {
				i++
				tokens = append(tokens, token{arg: argv[i], out: argv[i], kind: unknownValue})
			}
			continue
		}
		out := "--" + f.Name
		if hasVal {
			out += "=" + val
		}
		tokens = append(tokens, token{arg: arg, out: out, kind: option, name: f.Name})
		if !hasVal && f.NoOptDefVal == "" && i+1 < len(argv) {
			i++
			tokens = append(tokens, token{arg: argv[i], out: argv[i], kind: value})
		}
	}
	return Args{tokens: tokens}
}

// lookup returns the flag an option names, by its name or its one-letter
// shorthand, or nil when fs does not define it or the name is malformed.
func lookup(fs *pflag.FlagSet, name string) *pflag.Flag {
	if name == "" || name[0] == '-' {
		return nil
	}
	if f := fs.Lookup(name); f != nil {
		return f
	}
	if len(name) == 1 {
		return fs.ShorthandLookup(name)
	}
	return nil
}

// respellUnknown gives a well-formed unknown option two dashes, so a parser
// that refuses unknown options names it as the long option it is ("-z"
// becomes "--z", not the shorthand z). A malformed one stays as it is, and
// the parser refuses it as malformed.
func respellUnknown(arg, name string, dashes int) string {
	if dashes == 2 || name == "" || name[0] == '-' {
		return arg
	}
	return "-" + arg
}

// unknownName is an unknown option as reported: as given, without its
// value, which may be a secret.
func unknownName(arg, name string, hasVal bool) string {
	if !hasVal {
		return arg
	}
	if name == "" {
		// "--=x": keep the "=" so the report is not a bare "--".
		return arg[:strings.IndexByte(arg, '=')+1]
	}
	return arg[:strings.IndexByte(arg, '=')]
}

// Known returns the command line for a parser that must not see unknown
// options: every known option spelled with two dashes, option values,
// positional arguments, and "--" with everything after it, in their order.
// Unknown options and the values they took are left out.
func (a Args) Known() []string {
	// Never nil: cobra reads os.Args when a command's arguments are nil.
	out := make([]string, 0, len(a.tokens))
	for _, t := range a.tokens {
		if t.kind != unknown && t.kind != unknownValue {
			out = append(out, t.out)
		}
	}
	return out
}

// All returns the whole command line respelled, unknown options included
// (with two dashes when well formed), for a parser that refuses them: it
// then names the first unknown option as the long option it is.
func (a Args) All() []string {
	out := make([]string, 0, len(a.tokens))
	for _, t := range a.tokens {
		out = append(out, t.out)
	}
	return out
}

// Unknown returns each unknown or malformed option as given, without its
// value, in order; nil when there is none.
func (a Args) Unknown() []string {
	var out []string
	for _, t := range a.tokens {
		if t.kind == unknown {
			out = append(out, t.name)
		}
	}
	return out
}
