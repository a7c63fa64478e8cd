package exchange_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/imds-proxy/imds-proxy/pkg/exchange"
)

// ExampleNew shows how cmd/proxy wires a Source: configuration from the
// workload-identity environment, an injected registry and logger, and Run
// in the background for refresh-ahead and eviction.
func ExampleNew() {
	src, err := exchange.New(exchange.Config{
		TenantID:               "72f988bf-86f1-41af-91ab-2d7cd011db47",               // AZURE_TENANT_ID
		AuthorityHost:          "https://login.microsoftonline.com/",                 // AZURE_AUTHORITY_HOST
		TokenFile:              "/var/run/secrets/azure/tokens/azure-identity-token", // AZURE_FEDERATED_TOKEN_FILE
		DefaultClientID:        "11111111-1111-1111-1111-111111111111",               // AZURE_CLIENT_ID
		ExchangeTimeout:        15 * time.Second,
		MaxConcurrentExchanges: 8,
	}, exchange.Deps{Logger: logr.Discard(), Registerer: prometheus.NewRegistry()})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = src.Run(ctx) }()
	_, ok := src.SoonestExpiry()
	fmt.Println("cached tokens:", ok)
	// Output: cached tokens: false
}

// ExampleConfig_Validate shows how a command names the flag behind each
// invalid field: every problem is a *FieldError in the joined error.
func ExampleConfig_Validate() {
	flags := map[string]string{"TenantID": "--tenant-id", "AuthorityHost": "--authority-host", "TokenFile": "--federated-token-file"}
	err := exchange.Config{
		TenantID:      "contoso/common",
		AuthorityHost: "http://login.microsoftonline.com/",
	}.Validate()
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *exchange.FieldError
		if errors.As(e, &fe) {
			fmt.Printf("%s: %v\n", flags[fe.Field], fe.Err)
		}
	}
	// Output:
	// --tenant-id: contains '/': a tenant is a tenant ID (a GUID) or a domain name, made of letters, digits, '-' and '.'
	// --authority-host: must be an https URL
	// --federated-token-file: is required
}
