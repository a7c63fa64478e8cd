package iptables

import (
	"errors"
	"strings"
)

// CommentPrefix starts the comment of every rule this package writes, so an
// operator reading iptables-save output can tell which tool owns a rule.
const CommentPrefix = "imds-proxy: "

// Rule is one rule appended to (or, for a jump, inserted into) a chain of one
// of our tables. Its fields are kept in the canonical order iptables -S
// prints, so String matches the kernel's listing byte for byte and Check can
// compare text.
type Rule struct {
	// Chain is the chain the rule belongs to.
	Chain string
	// Match holds the match arguments, for example "-p", "tcp", "-m", "tcp".
	Match []string
	// Purpose says why the rule exists; it becomes the rule's comment after
	// CommentPrefix.
	Purpose string
	// Target holds the target arguments, for example "-j", "ACCEPT".
	Target []string
}

// Spec returns the rule's arguments as passed to iptables after the chain
// name: the matches, the comment match, then the target.
func (r Rule) Spec() []string {
	spec := make([]string, 0, len(r.Match)+len(r.Target)+4)
	spec = append(spec, r.Match...)
	spec = append(spec, "-m", "comment", "--comment", CommentPrefix+r.Purpose)
	return append(spec, r.Target...)
}

// String renders the rule the way iptables -S and iptables-save print it,
// for example `-A IMDS_PROXY_OUTPUT -m owner --uid-owner 1501 -m comment
// --comment "imds-proxy: ..." -j ACCEPT`.
func (r Rule) String() string {
	var b strings.Builder
	b.WriteString("-A ")
	b.WriteString(r.Chain)
	for _, arg := range r.Spec() {
		b.WriteByte(' ')
		b.WriteString(quote(arg))
	}
	return b.String()
}

// quote wraps an argument in double quotes when iptables-save would, escaping
// quotes and backslashes inside.
func quote(arg string) string {
	if arg != "" && !strings.ContainsAny(arg, " \t\"\\'") {
		return arg
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(arg); i++ {
		if arg[i] == '"' || arg[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(arg[i])
	}
	b.WriteByte('"')
	return b.String()
}

// errUnterminatedQuote is returned by splitRule for a line whose quotes do not
// balance.
var errUnterminatedQuote = errors.New("unterminated quote")

// splitRule splits one line of iptables -S or iptables-save output into its
// arguments, undoing the quoting iptables applies to comments. It is the
// inverse of joining Rule.String's quoted arguments.
func splitRule(line string) ([]string, error) {
	var (
		args    []string
		cur     strings.Builder
		inArg   bool
		inQuote bool
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(line) && (line[i+1] == '"' || line[i+1] == '\\'):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			inQuote = !inQuote
			inArg = true
		case !inQuote && (c == ' ' || c == '\t'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inQuote {
		return nil, errUnterminatedQuote
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}
