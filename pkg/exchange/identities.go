package exchange

import (
	"strings"
	"sync"
)

// selectorKey is an object id or resource id selector, lower-cased.
type selectorKey struct {
	kind  SelectorKind
	value string
}

// identityMemory is what the proxy learns about identities from the tokens
// it obtains: the client ids that produced a token (the candidates of a
// trial exchange) and the client id an object id or resource id belongs
// to (from the oid and xms_mirid claims). Both are bounded, because client
// ids and selectors come from requests. It is safe for concurrent use.
type identityMemory struct {
	maxClients     int
	maxResolutions int

	mu       sync.Mutex
	seen     []string // client ids that produced a token, oldest first
	resolved map[selectorKey]string
}

func newIdentityMemory(maxClients, maxResolutions int) *identityMemory {
	return &identityMemory{
		maxClients:     maxClients,
		maxResolutions: maxResolutions,
		resolved:       make(map[selectorKey]string),
	}
}

// learn records that clientID obtained a token with claims c.
func (m *identityMemory) learn(clientID string, c claims) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rememberClientLocked(clientID)
	if c.ObjectID != "" {
		m.rememberLocked(selectorKey{SelectObjectID, strings.ToLower(c.ObjectID)}, clientID)
	}
	if c.ResourceID != "" {
		m.rememberLocked(selectorKey{SelectResourceID, strings.ToLower(c.ResourceID)}, clientID)
	}
}

// remember records that selector k resolves to clientID.
func (m *identityMemory) remember(k selectorKey, clientID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rememberLocked(k, clientID)
}

// resolve returns the client id selector k was last seen to belong to.
func (m *identityMemory) resolve(k selectorKey) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.resolved[k]
	return c, ok
}

// seenClients returns the client ids that produced a token, oldest first.
func (m *identityMemory) seenClients() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.seen...)
}

// rememberClientLocked moves clientID to the newest end of seen, dropping
// the oldest client id beyond maxClients.
func (m *identityMemory) rememberClientLocked(clientID string) {
	for i, c := range m.seen {
		if c == clientID {
			if i != len(m.seen)-1 {
				copy(m.seen[i:], m.seen[i+1:])
				m.seen[len(m.seen)-1] = clientID
			}
			return
		}
	}
	if len(m.seen) >= m.maxClients {
		copy(m.seen, m.seen[1:])
		m.seen = m.seen[:len(m.seen)-1]
	}
	m.seen = append(m.seen, clientID)
}

// rememberLocked stores a resolution; when the map is full it starts over
// (a forgotten resolution is found again by a trial exchange).
func (m *identityMemory) rememberLocked(k selectorKey, clientID string) {
	if _, ok := m.resolved[k]; !ok && len(m.resolved) >= m.maxResolutions {
		clear(m.resolved)
	}
	m.resolved[k] = clientID
}
