package cli

import (
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// testFlags defines flags of every shape the commands use: an int, a
// string, a boolean, a repeatable string, and cobra's help with its -h.
func testFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Int("proxy-port", 8000, "")
	fs.String("log-level", "", "")
	fs.Bool("probe", false, "")
	fs.StringArray("identity", nil, "")
	fs.BoolP("help", "h", false, "")
	return fs
}

func TestNormalize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		argv    []string
		known   []string
		unknown []string
		all     []string // nil: same as known
	}{
		{"nothing", nil, []string{}, nil, nil},
		{"webhook sidecar args", []string{"--proxy-port=8000", "--log-level="}, []string{"--proxy-port=8000", "--log-level="}, nil, nil},
		{"webhook postStart args", []string{"--proxy-port=8000", "--probe", "--log-level=info"}, []string{"--proxy-port=8000", "--probe", "--log-level=info"}, nil, nil},
		{"one dash with =", []string{"-proxy-port=8006", "-log-level=info"}, []string{"--proxy-port=8006", "--log-level=info"}, nil, nil},
		{"one dash, value in the next argument", []string{"-proxy-port", "9000", "-log-level", "debug"}, []string{"--proxy-port", "9000", "--log-level", "debug"}, nil, nil},
		{"boolean with one dash", []string{"-probe"}, []string{"--probe"}, nil, nil},
		{"boolean with = false", []string{"-probe=false"}, []string{"--probe=false"}, nil, nil},
		{"a boolean takes no next argument", []string{"-probe", "true"}, []string{"--probe", "true"}, nil, nil},
		{"repeatable", []string{"-identity", "a", "-identity=b", "--identity", "c"}, []string{"--identity", "a", "--identity=b", "--identity", "c"}, nil, nil},
		{"value starting with a dash", []string{"--log-level", "-x"}, []string{"--log-level", "-x"}, nil, nil},
		{"value that looks like a known option", []string{"-log-level", "-proxy-port=1"}, []string{"--log-level", "-proxy-port=1"}, nil, nil},
		{"value that looks like an unknown option", []string{"-log-level", "-future=1"}, []string{"--log-level", "-future=1"}, nil, nil},
		{"value that is --", []string{"-log-level", "--", "-probe"}, []string{"--log-level", "--", "--probe"}, nil, nil},
		{"value that is -h", []string{"-log-level", "-h"}, []string{"--log-level", "-h"}, nil, nil},
		{"value with = inside", []string{"-log-level", "a=b"}, []string{"--log-level", "a=b"}, nil, nil},
		{"empty value", []string{"-log-level", ""}, []string{"--log-level", ""}, nil, nil},
		{"-- ends the options", []string{"-probe", "--", "-proxy-port=1", "--probe", "-z"}, []string{"--probe", "--", "-proxy-port=1", "--probe", "-z"}, nil, nil},
		{"options go on after a positional argument", []string{"stray", "-probe"}, []string{"stray", "--probe"}, nil, nil},
		{"a lone dash and an empty argument are positional", []string{"-", "", "-probe"}, []string{"-", "", "--probe"}, nil, nil},
		{"missing value at the end is left to the parser", []string{"-proxy-port"}, []string{"--proxy-port"}, nil, nil},
		{"-h is --help", []string{"-h"}, []string{"--help"}, nil, nil},
		{"-help is --help", []string{"-help"}, []string{"--help"}, nil, nil},
		{"--h is --help, as in Go's flag package", []string{"--h"}, []string{"--help"}, nil, nil},
		{"unknown with a value, two dashes", []string{"--future-flag=secret", "--probe"}, []string{"--probe"}, []string{"--future-flag"}, []string{"--future-flag=secret", "--probe"}},
		{"unknown with a value, one dash", []string{"-future-flag=secret", "-proxy-port=1"}, []string{"--proxy-port=1"}, []string{"-future-flag"}, []string{"--future-flag=secret", "--proxy-port=1"}},
		{"unknown takes the next argument unless it starts with a dash", []string{"--other", "value", "-z", "stray", "-probe"},
			[]string{"--probe"}, []string{"--other", "-z"}, []string{"--other", "value", "--z", "stray", "--probe"}},
		{"unknown before a known option", []string{"-z", "-probe"}, []string{"--probe"}, []string{"-z"}, []string{"--z", "--probe"}},
		{"unknown takes an empty argument", []string{"-z", "", "x"}, []string{"x"}, []string{"-z"}, []string{"--z", "", "x"}},
		{"unknown leaves a lone dash", []string{"-z", "-"}, []string{"-"}, []string{"-z"}, []string{"--z", "-"}},
		{"no shorthand clusters", []string{"-pz", "-hv", "-ph"}, []string{}, []string{"-pz", "-hv", "-ph"}, []string{"--pz", "--hv", "--ph"}},
		{"go test flags are unknown", []string{"-test.v", "-test.run=X"}, []string{}, []string{"-test.v", "-test.run"}, []string{"--test.v", "--test.run=X"}},
		{"three dashes", []string{"---x", "-probe"}, []string{"--probe"}, []string{"---x"}, []string{"---x", "--probe"}},
		{"three dashes alone", []string{"---"}, []string{}, []string{"---"}, []string{"---"}},
		{"no name before =", []string{"--=x", "-=y"}, []string{}, []string{"--=", "-="}, []string{"--=x", "-=y"}},
		{"name not ASCII", []string{"-пр=1"}, []string{}, []string{"-пр"}, []string{"--пр=1"}},
		{"case matters", []string{"-Proxy-Port=1"}, []string{}, []string{"-Proxy-Port"}, []string{"--Proxy-Port=1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := Normalize(testFlags(), tt.argv)
			if got := args.Known(); got == nil || !reflect.DeepEqual(got, tt.known) {
				t.Errorf("Known() = %#v, want %#v", got, tt.known)
			}
			if got := args.Unknown(); !reflect.DeepEqual(got, tt.unknown) {
				t.Errorf("Unknown() = %#v, want %#v", got, tt.unknown)
			}
			wantAll := tt.all
			if wantAll == nil {
				wantAll = tt.known
			}
			if got := args.All(); !reflect.DeepEqual(got, wantAll) {
				t.Errorf("All() = %#v, want %#v", got, wantAll)
			}
		})
	}
}

// TestNormalizedArgsParse shows what pflag makes of Known: the values Go's
// flag package would have read.
func TestNormalizedArgsParse(t *testing.T) {
	t.Parallel()
	fs := testFlags()
	argv := []string{"-proxy-port", "9000", "stray", "-log-level", "-x", "-probe", "-future=secret", "-identity=a", "--", "-identity=b"}
	if err := fs.Parse(Normalize(fs, argv).Known()); err != nil {
		t.Fatal(err)
	}
	port, _ := fs.GetInt("proxy-port")
	level, _ := fs.GetString("log-level")
	probe, _ := fs.GetBool("probe")
	ids, _ := fs.GetStringArray("identity")
	if port != 9000 || level != "-x" || !probe || !reflect.DeepEqual(ids, []string{"a"}) {
		t.Errorf("parsed port=%d level=%q probe=%v identities=%q", port, level, probe, ids)
	}
	if got := fs.Args(); !reflect.DeepEqual(got, []string{"stray", "-identity=b"}) {
		t.Errorf("positional arguments = %q", got)
	}
}

// FuzzNormalize checks, for any command line, that Normalize never turns a
// value into an option or an option into a value, and that it is
// idempotent. The oracles are pflag itself, parsing what Normalize returns,
// and Go's flag package, whose reading of one-dash options Normalize
// promises, parsing the original. The fuzzer's string is split at NUL
// into arguments.
func FuzzNormalize(f *testing.F) {
	for _, argv := range [][]string{
		{"--proxy-port=8000", "--log-level="},
		{"-proxy-port=8006", "-probe", "-log-level", "info"},
		{"-log-level", "-proxy-port=1", "--", "-probe"},
		{"--future=x", "-z", "stray", "-identity", "a"},
		{"-", "", "---x", "--=x", "-=y", "-h", "-hv"},
		{"-proxy-port"},
		{"-log-level", "--", "-log-level", "-h"},
	} {
		f.Add(strings.Join(argv, "\x00"))
	}
	f.Fuzz(func(t *testing.T, joined string) {
		argv := strings.Split(joined, "\x00")
		args := Normalize(testFlags(), argv)

		// Shape: one output per input; only options are respelled, values
		// and positional arguments pass unchanged.
		all := args.All()
		if len(all) != len(argv) {
			t.Fatalf("All() has %d arguments for %d: %q -> %q", len(all), len(argv), argv, all)
		}
		for i, tok := range args.tokens {
			if tok.arg != argv[i] {
				t.Fatalf("token %d is %q, argument is %q", i, tok.arg, argv[i])
			}
			switch tok.kind {
			case value, positional, terminator, unknownValue:
				if tok.out != tok.arg {
					t.Fatalf("argument %q of kind %d passed on as %q", tok.arg, tok.kind, tok.out)
				}
			case option:
				if !strings.HasPrefix(tok.out, "--"+tok.name) {
					t.Fatalf("option %q passed on as %q", tok.arg, tok.out)
				}
			}
		}

		// Idempotent.
		known := args.Known()
		again := Normalize(testFlags(), known)
		if got := again.Known(); !reflect.DeepEqual(got, known) || again.Unknown() != nil {
			t.Fatalf("Known() is not stable: %q -> %q (unknown %q)", known, got, again.Unknown())
		}
		if got := Normalize(testFlags(), all).All(); !reflect.DeepEqual(got, all) {
			t.Fatalf("All() is not stable: %q -> %q", all, got)
		}

		// pflag reads Known as Normalize sorted it.
		wantSets, wantPositional, wantErr := expectedParse(args)
		var gotSets []string
		pfs := recordingPflags(&gotSets)
		err := pfs.Parse(known)
		if (err != nil) != wantErr {
			t.Fatalf("pflag.Parse(%q) error = %v, want error: %v", known, err, wantErr)
		}
		if err == nil {
			if !reflect.DeepEqual(gotSets, wantSets) {
				t.Fatalf("pflag set %q from %q, Normalize sorted %q", gotSets, known, wantSets)
			}
			if got := pfs.Args(); !equalArgs(got, wantPositional) {
				t.Fatalf("pflag left positional %q from %q, Normalize sorted %q", got, known, wantPositional)
			}
		}

		// Go's flag package reads the original the same way, up to its
		// first positional argument (where it stops, unlike cobra).
		var goSets []string
		gfs := recordingGoFlags(&goSets)
		switch goErr := gfs.Parse(argv); {
		case goErr == nil:
			read := len(argv) - gfs.NArg()
			for _, tok := range args.tokens[:read] {
				if tok.kind == unknown {
					t.Fatalf("flag.Parse(%q) accepts %q, Normalize found it unknown", argv, tok.arg)
				}
			}
			if len(gotSets) < len(goSets) || !equalArgs(gotSets[:len(goSets)], goSets) {
				t.Fatalf("flag.Parse(%q) set %q; pflag.Parse(%q) set %q (%v)", argv, goSets, known, gotSets, err)
			}
			if err != nil && gfs.NArg() == 0 {
				t.Fatalf("flag.Parse(%q) accepts it; pflag.Parse(%q): %v", argv, known, err)
			}
		case strings.Contains(goErr.Error(), "needs an argument"):
			if !wantErr {
				t.Fatalf("flag.Parse(%q): %v; Normalize sorted no option without its value", argv, goErr)
			}
		default:
			if len(args.Unknown()) == 0 {
				t.Fatalf("flag.Parse(%q): %v; Normalize found nothing unknown", argv, goErr)
			}
		}
	})
}

// expectedParse returns what a parser must make of Known according to the
// tokens: the flags set, as "name=value", the positional arguments, and
// whether an option lacks its value.
func expectedParse(args Args) (sets, rest []string, missingValue bool) {
	fs := testFlags()
	var toks []token
	for _, tok := range args.tokens {
		if tok.kind != unknown && tok.kind != unknownValue {
			toks = append(toks, tok)
		}
	}
	for i := 0; i < len(toks); i++ {
		tok := toks[i]
		switch tok.kind {
		case option:
			if _, v, ok := strings.Cut(tok.out, "="); ok {
				sets = append(sets, tok.name+"="+v)
				continue
			}
			if def := fs.Lookup(tok.name).NoOptDefVal; def != "" {
				sets = append(sets, tok.name+"="+def)
				continue
			}
			if i+1 >= len(toks) || toks[i+1].kind != value {
				return sets, rest, true
			}
			sets = append(sets, tok.name+"="+toks[i+1].out)
			i++
		case positional:
			rest = append(rest, tok.out)
		case value:
			panic("a value token without its option")
		}
	}
	return sets, rest, false
}

// equalArgs compares argument lists, nil and empty alike.
func equalArgs(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
}

// recorder is a flag value that records every Set as "name=value".
type recorder struct {
	name    string
	log     *[]string
	boolean bool
}

func (r recorder) Set(v string) error { *r.log = append(*r.log, r.name+"="+v); return nil }
func (r recorder) String() string     { return "" }
func (r recorder) IsBoolFlag() bool   { return r.boolean }
func (r recorder) Type() string {
	if r.boolean {
		return "bool"
	}
	return "string"
}

// recordingPflags mirrors testFlags with recorders.
func recordingPflags(log *[]string) *pflag.FlagSet {
	fs := pflag.NewFlagSet("record", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, name := range []string{"proxy-port", "log-level", "identity"} {
		fs.Var(recorder{name: name, log: log}, name, "")
	}
	fs.VarPF(recorder{name: "probe", log: log, boolean: true}, "probe", "", "").NoOptDefVal = "true"
	fs.VarPF(recorder{name: "help", log: log, boolean: true}, "help", "h", "").NoOptDefVal = "true"
	return fs
}

// recordingGoFlags mirrors testFlags in Go's flag package, where -h is a
// flag of its own.
func recordingGoFlags(log *[]string) *flag.FlagSet {
	fs := flag.NewFlagSet("record", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, name := range []string{"proxy-port", "log-level", "identity"} {
		fs.Var(recorder{name: name, log: log}, name, "")
	}
	fs.Var(recorder{name: "probe", log: log, boolean: true}, "probe", "")
	fs.Var(recorder{name: "help", log: log, boolean: true}, "help", "")
	fs.Var(recorder{name: "help", log: log, boolean: true}, "h", "")
	return fs
}
