package cli

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// run executes a small command prepared by Prepare and returns what its
// RunE saw.
func run(t *testing.T, unknown UnknownFlags, argv ...string) (port int, probe bool, positional []string, found Args, out string, err error) {
	t.Helper()
	ran := false
	cmd := &cobra.Command{
		Use:           "cmd",
		Version:       "v1",
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(_ *cobra.Command, args []string) error {
			ran, positional = true, args
			return nil
		},
	}
	cmd.Flags().IntVar(&port, "proxy-port", 8000, "Port")
	cmd.Flags().BoolVar(&probe, "probe", false, "Probe")
	var buf bytes.Buffer
	cmd.SetOut(&buf)
	cmd.SetErr(&buf)
	found = Prepare(cmd, argv, unknown)
	err = cmd.ExecuteContext(context.Background())
	if ran && positional == nil {
		positional = []string{}
	}
	return port, probe, positional, found, buf.String(), err
}

func TestPrepareOneDash(t *testing.T) {
	t.Parallel()
	for _, policy := range []UnknownFlags{IgnoreUnknown, RefuseUnknown} {
		port, probe, positional, found, _, err := run(t, policy, "-proxy-port", "9000", "-probe", "stray")
		if err != nil || port != 9000 || !probe || !reflect.DeepEqual(positional, []string{"stray"}) || found.Unknown() != nil {
			t.Errorf("policy %d: port=%d probe=%v positional=%q unknown=%q err=%v", policy, port, probe, positional, found.Unknown(), err)
		}
	}
}

func TestPrepareUnknown(t *testing.T) {
	t.Parallel()
	port, _, _, found, _, err := run(t, IgnoreUnknown, "-future=secret", "-proxy-port=9000", "-z", "value")
	if err != nil || port != 9000 || !reflect.DeepEqual(found.Unknown(), []string{"-future", "-z"}) {
		t.Errorf("ignore: port=%d unknown=%q err=%v", port, found.Unknown(), err)
	}
	_, _, positional, _, _, err := run(t, RefuseUnknown, "-proxy-port=9000", "-future=secret")
	if err == nil || err.Error() != "unknown flag: --future" || positional != nil {
		t.Errorf("refuse: err=%v positional=%q", err, positional)
	}
	// Refused even beside --help, as pflag refuses it before cobra looks
	// at --help.
	_, _, _, _, out, err := run(t, RefuseUnknown, "-h", "-q")
	if err == nil || err.Error() != "unknown flag: --q" || out != "" {
		t.Errorf("refuse with -h: err=%v out=%q", err, out)
	}
}

func TestPrepareHelpAndVersion(t *testing.T) {
	t.Parallel()
	for _, argv := range [][]string{{"-h"}, {"--h"}, {"-help"}, {"--help"}} {
		_, _, positional, _, out, err := run(t, RefuseUnknown, argv...)
		if err != nil || positional != nil || !strings.Contains(out, "--proxy-port int") {
			t.Errorf("%q: err=%v ran=%v help=%q", argv, err, positional != nil, out)
		}
	}
	for _, argv := range [][]string{{"-version"}, {"--version"}} {
		_, _, positional, _, out, err := run(t, RefuseUnknown, argv...)
		if err != nil || positional != nil || out != "cmd version v1\n" {
			t.Errorf("%q: err=%v ran=%v out=%q", argv, err, positional != nil, out)
		}
	}
}
