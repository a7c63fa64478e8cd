package cli

import "github.com/spf13/cobra"

// UnknownFlags says what a command does with options it does not define.
type UnknownFlags int

const (
	// IgnoreUnknown keeps unknown options, and the values they take, away
	// from the command's parser; the caller reports Args.Unknown.
	IgnoreUnknown UnknownFlags = iota
	// RefuseUnknown passes them on, so the command's parser fails, naming
	// the first one as a long option.
	RefuseUnknown
)

// Prepare normalizes argv against cmd's flags and sets the result as cmd's
// arguments. cmd's flags must be defined; Prepare adds cobra's --help and
// --version flags itself (cobra would add them only at Execute, too late
// for Normalize to know them). It returns what Normalize found, for the
// caller to report unknown options.
func Prepare(cmd *cobra.Command, argv []string, unknown UnknownFlags) Args {
	cmd.InitDefaultHelpFlag()
	cmd.InitDefaultVersionFlag()
	args := Normalize(cmd.Flags(), argv)
	if unknown == RefuseUnknown {
		cmd.SetArgs(args.All())
	} else {
		cmd.SetArgs(args.Known())
	}
	return args
}
