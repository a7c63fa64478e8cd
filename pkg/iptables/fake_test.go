package iptables

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// fakeApplier is an in-memory nat table implementing Applier. It renders rules
// the way iptables -S does for the canonical specs this package produces,
// records every call, and can fail the call with a given index.
type fakeApplier struct {
	chains map[string][]string // chain -> -A lines
	order  []string            // chain creation order
	calls  []string
	failAt int // 1-based call index to fail; 0 never
}

var errInjected = errors.New("injected failure")

func newFake() *fakeApplier {
	f := &fakeApplier{chains: map[string][]string{}}
	for _, c := range []string{"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"} {
		f.chains[c] = nil
		f.order = append(f.order, c)
	}
	return f
}

func (f *fakeApplier) call(format string, args ...any) error {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	if len(f.calls) == f.failAt {
		return fmt.Errorf("%s: %w", f.calls[len(f.calls)-1], errInjected)
	}
	return nil
}

func render(chain string, spec []string) string {
	q := make([]string, len(spec))
	for i, s := range spec {
		q[i] = quote(s)
	}
	return strings.TrimSpace("-A " + chain + " " + strings.Join(q, " "))
}

func (f *fakeApplier) ChainExists(table, chain string) (bool, error) {
	if err := f.call("exists %s %s", table, chain); err != nil {
		return false, err
	}
	_, ok := f.chains[chain]
	return ok, nil
}

func (f *fakeApplier) ClearChain(table, chain string) error {
	if err := f.call("clear %s %s", table, chain); err != nil {
		return err
	}
	if _, ok := f.chains[chain]; !ok {
		f.order = append(f.order, chain)
	}
	f.chains[chain] = nil
	return nil
}

func (f *fakeApplier) DeleteChain(table, chain string) error {
	if err := f.call("delete-chain %s %s", table, chain); err != nil {
		return err
	}
	if len(f.chains[chain]) > 0 {
		return errors.New("chain not empty")
	}
	delete(f.chains, chain)
	f.order = slices.DeleteFunc(f.order, func(c string) bool { return c == chain })
	return nil
}

func (f *fakeApplier) Append(table, chain string, spec ...string) error {
	if err := f.call("append %s %s", table, render(chain, spec)); err != nil {
		return err
	}
	if _, ok := f.chains[chain]; !ok {
		return errors.New("no such chain")
	}
	f.chains[chain] = append(f.chains[chain], render(chain, spec))
	return nil
}

func (f *fakeApplier) Insert(table, chain string, pos int, spec ...string) error {
	if err := f.call("insert %s %d %s", table, pos, render(chain, spec)); err != nil {
		return err
	}
	rules, ok := f.chains[chain]
	if !ok || pos < 1 || pos > len(rules)+1 {
		return errors.New("bad insert")
	}
	f.chains[chain] = slices.Insert(rules, pos-1, render(chain, spec))
	return nil
}

func (f *fakeApplier) DeleteRule(table, chain string, pos int) error {
	if err := f.call("delete-rule %s %s %d", table, chain, pos); err != nil {
		return err
	}
	rules := f.chains[chain]
	if pos < 1 || pos > len(rules) {
		return errors.New("bad delete")
	}
	f.chains[chain] = slices.Delete(rules, pos-1, pos)
	return nil
}

func (f *fakeApplier) List(table, chain string) ([]string, error) {
	if err := f.call("list %s %s", table, chain); err != nil {
		return nil, err
	}
	rules, ok := f.chains[chain]
	if !ok {
		return nil, errors.New("no such chain")
	}
	head := "-N " + chain
	if slices.Contains([]string{"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}, chain) {
		head = "-P " + chain + " ACCEPT"
	}
	return append([]string{head}, rules...), nil
}

// dump renders the whole table, like iptables -t nat -S.
func (f *fakeApplier) dump() string {
	var b strings.Builder
	for _, c := range f.order {
		b.WriteString(c + ":\n")
		for _, r := range f.chains[c] {
			b.WriteString("  " + r + "\n")
		}
	}
	return b.String()
}
