package iptables

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// fakeApplier is an in-memory filter and nat table implementing Applier. It
// renders rules the way iptables -S does for the canonical specs this
// package produces, records every call, and can fail the call with a given
// index.
type fakeApplier struct {
	tables map[string]*fakeTable
	calls  []string
	failAt int // 1-based call index to fail; 0 never
}

// fakeTable is one table of the fake.
type fakeTable struct {
	chains map[string][]string // chain -> -A lines
	order  []string            // chain creation order
}

// builtinChains are the built-in chains of each table, in iptables -S order.
var builtinChains = map[string][]string{
	FilterTable: {"INPUT", "FORWARD", "OUTPUT"},
	NATTable:    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
}

// fakeTables lists the fake's tables in iptables-save order.
var fakeTables = []string{FilterTable, NATTable}

var errInjected = errors.New("injected failure")

func newFake() *fakeApplier {
	f := &fakeApplier{tables: map[string]*fakeTable{}}
	for _, name := range fakeTables {
		t := &fakeTable{chains: map[string][]string{}}
		for _, c := range builtinChains[name] {
			t.chains[c] = nil
			t.order = append(t.order, c)
		}
		f.tables[name] = t
	}
	return f
}

// chain returns the rules of chain in table, for assertions and setup.
func (f *fakeApplier) chain(table, chain string) []string {
	return f.tables[table].chains[chain]
}

// setChain replaces the rules of chain in table, creating it if needed.
func (f *fakeApplier) setChain(table, chain string, rules ...string) {
	t := f.tables[table]
	if _, ok := t.chains[chain]; !ok {
		t.order = append(t.order, chain)
	}
	t.chains[chain] = rules
}

func (f *fakeApplier) call(format string, args ...any) error {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	if len(f.calls) == f.failAt {
		return fmt.Errorf("%s: %w", f.calls[len(f.calls)-1], errInjected)
	}
	return nil
}

// table returns the named table; an unknown one is an error, as in iptables.
func (f *fakeApplier) table(name string) (*fakeTable, error) {
	t, ok := f.tables[name]
	if !ok {
		return nil, fmt.Errorf("no table %q", name)
	}
	return t, nil
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
	t, err := f.table(table)
	if err != nil {
		return false, err
	}
	_, ok := t.chains[chain]
	return ok, nil
}

func (f *fakeApplier) ClearChain(table, chain string) error {
	if err := f.call("clear %s %s", table, chain); err != nil {
		return err
	}
	t, err := f.table(table)
	if err != nil {
		return err
	}
	if _, ok := t.chains[chain]; !ok {
		t.order = append(t.order, chain)
	}
	t.chains[chain] = nil
	return nil
}

func (f *fakeApplier) DeleteChain(table, chain string) error {
	if err := f.call("delete-chain %s %s", table, chain); err != nil {
		return err
	}
	t, err := f.table(table)
	if err != nil {
		return err
	}
	if len(t.chains[chain]) > 0 {
		return errors.New("chain not empty")
	}
	delete(t.chains, chain)
	t.order = slices.DeleteFunc(t.order, func(c string) bool { return c == chain })
	return nil
}

func (f *fakeApplier) Append(table, chain string, spec ...string) error {
	if err := f.call("append %s %s", table, render(chain, spec)); err != nil {
		return err
	}
	t, err := f.table(table)
	if err != nil {
		return err
	}
	if _, ok := t.chains[chain]; !ok {
		return errors.New("no such chain")
	}
	t.chains[chain] = append(t.chains[chain], render(chain, spec))
	return nil
}

func (f *fakeApplier) Insert(table, chain string, pos int, spec ...string) error {
	if err := f.call("insert %s %d %s", table, pos, render(chain, spec)); err != nil {
		return err
	}
	t, err := f.table(table)
	if err != nil {
		return err
	}
	rules, ok := t.chains[chain]
	if !ok || pos < 1 || pos > len(rules)+1 {
		return errors.New("bad insert")
	}
	t.chains[chain] = slices.Insert(rules, pos-1, render(chain, spec))
	return nil
}

func (f *fakeApplier) DeleteRule(table, chain string, pos int) error {
	if err := f.call("delete-rule %s %s %d", table, chain, pos); err != nil {
		return err
	}
	t, err := f.table(table)
	if err != nil {
		return err
	}
	rules := t.chains[chain]
	if pos < 1 || pos > len(rules) {
		return errors.New("bad delete")
	}
	t.chains[chain] = slices.Delete(rules, pos-1, pos)
	return nil
}

func (f *fakeApplier) List(table, chain string) ([]string, error) {
	if err := f.call("list %s %s", table, chain); err != nil {
		return nil, err
	}
	t, err := f.table(table)
	if err != nil {
		return nil, err
	}
	rules, ok := t.chains[chain]
	if !ok {
		return nil, errors.New("no such chain")
	}
	head := "-N " + chain
	if slices.Contains(builtinChains[table], chain) {
		head = "-P " + chain + " ACCEPT"
	}
	return append([]string{head}, rules...), nil
}

// dump renders every table, like iptables -S for each.
func (f *fakeApplier) dump() string {
	var b strings.Builder
	for _, name := range fakeTables {
		t := f.tables[name]
		b.WriteString("*" + name + "\n")
		for _, c := range t.order {
			b.WriteString(c + ":\n")
			for _, r := range t.chains[c] {
				b.WriteString("  " + r + "\n")
			}
		}
	}
	return b.String()
}
