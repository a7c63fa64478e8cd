package entraemu_test

import (
	"context"
	"fmt"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
)

// Start an emulator with one federated app and get a token for it with MSAL
// Go, the way pkg/exchange does.
func ExampleStart() {
	const tenant, clientID = "72f988bf-86f1-41af-91ab-2d7cd011db47", "11111111-1111-1111-1111-111111111111"
	emu, err := entraemu.Start(entraemu.Options{
		Tenant: tenant,
		Apps: []entraemu.App{{
			ClientID:    clientID,
			ObjectID:    "22222222-2222-2222-2222-222222222222",
			Federations: []entraemu.Federation{{Subject: "system:serviceaccount:default:workload"}},
		}},
	})
	if err != nil {
		panic(err)
	}
	defer emu.Close()

	cred := confidential.NewCredFromAssertionCallback(func(context.Context, confidential.AssertionRequestOptions) (string, error) {
		// In the proxy this reads AZURE_FEDERATED_TOKEN_FILE.
		return emu.MintServiceAccountToken("default", "workload", time.Hour)
	})
	client, err := confidential.New(emu.AuthorityHost()+tenant, clientID, cred,
		confidential.WithInstanceDiscovery(false),
		confidential.WithHTTPClient(emu.HTTPClient()))
	if err != nil {
		panic(err)
	}
	res, err := client.AcquireTokenByCredential(context.Background(), []string{"https://vault.azure.net/.default"})
	if err != nil {
		panic(err)
	}
	claims, err := emu.VerifyAccessToken(res.AccessToken)
	if err != nil {
		panic(err)
	}
	fmt.Println(claims.Audience, claims.AppID, emu.TokenCalls(clientID, "https://vault.azure.net/.default"))
	// Output: https://vault.azure.net 11111111-1111-1111-1111-111111111111 1
}
