package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/pflag"
)

// Env binds flags of one flag set to the environment variables they fall
// back to, and secrets to the variables they come from.
type Env struct {
	fs      *pflag.FlagSet
	vars    []envVar
	secrets []secretVar
}

// secretVar is one variable read by Secret.
type secretVar struct {
	name string
	dst  *string
}

// envVar is one binding.
type envVar struct {
	flag, name string
	// split cuts the value of a repeatable flag's variable into the values
	// set one after the other; nil for a flag that takes one value.
	split func(string) []string
}

// NewEnv returns an Env for the flags of fs.
func NewEnv(fs *pflag.FlagSet) *Env {
	return &Env{fs: fs}
}

// Bind makes the defined flag fall back to the environment variable name
// and appends "(env NAME)" to its usage text. It panics if fs has no such
// flag, a mistake in the program that any test of the command finds.
func (e *Env) Bind(flag, name string) {
	e.bind(flag, name, nil)
}

// BindList is Bind for a repeatable flag: split cuts the variable's value
// into the values set one after the other.
func (e *Env) BindList(flag, name string, split func(string) []string) {
	e.bind(flag, name, split)
}

func (e *Env) bind(flag, name string, split func(string) []string) {
	f := e.fs.Lookup(flag)
	if f == nil {
		panic(fmt.Sprintf("cli: binding undefined flag --%s to %s", flag, name))
	}
	f.Usage += " (env " + name + ")"
	e.vars = append(e.vars, envVar{flag: flag, name: name, split: split})
}

// Secret makes Apply set *dst from the environment variable name, when it
// is set and not empty. A secret has no flag: a command line is visible
// to anyone who can list the pod's processes and is written into the pod
// spec, while a variable can come from a Kubernetes Secret. Apply never
// puts the value in an error, and Sources does not list it.
func (e *Env) Secret(name string, dst *string) {
	e.secrets = append(e.secrets, secretVar{name: name, dst: dst})
}

// Sources maps each flag Apply set to the environment variable its value
// came from.
type Sources map[string]string

// Name names where the value of flag came from, for error messages: its
// environment variable when Apply set it from one, else "--flag" (the
// command line or the default).
func (s Sources) Name(flag string) string {
	if name, ok := s[flag]; ok {
		return name
	}
	return "--" + flag
}

// Apply sets every bound flag the command line did not set from its
// environment variable, when that is set and not empty: the workload
// identity webhook drops empty values, and an empty port, duration or
// identity is never meant. It sets every Secret the same way. It must run
// after the command line is parsed.
// An invalid value stops it with one error naming the variable, the value,
// the flag and why, e.g.
// `invalid PROXY_PORT "http" (--proxy-port): strconv.ParseInt: parsing "http": invalid syntax`.
func (e *Env) Apply(lookupEnv func(string) (string, bool)) (Sources, error) {
	sources := Sources{}
	for _, v := range e.vars {
		if e.fs.Changed(v.flag) {
			continue
		}
		raw, ok := lookupEnv(v.name)
		if !ok || raw == "" {
			continue
		}
		values := []string{raw}
		if v.split != nil {
			values = v.split(raw)
		}
		for _, val := range values {
			if err := e.fs.Set(v.flag, val); err != nil {
				return sources, fmt.Errorf("invalid %s %q (--%s): %w", v.name, val, v.flag, flagCause(err))
			}
		}
		if len(values) > 0 {
			sources[v.flag] = v.name
		}
	}
	for _, v := range e.secrets {
		if raw, ok := lookupEnv(v.name); ok && raw != "" {
			*v.dst = raw
		}
	}
	return sources, nil
}

// flagCause strips pflag's `invalid argument "x" for "--flag" flag:`
// wrapper, which would name the flag rather than the variable the value
// came from.
func flagCause(err error) error {
	var ive *pflag.InvalidValueError
	if errors.As(err, &ive) {
		return ive.Unwrap()
	}
	return err
}
