package main

// Authentication and authorization of a test server: any bearer token is an
// admin (system:masters); requests without credentials are anonymous and may
// only read health and version endpoints.  RBAC objects are stored, never
// enforced.

import (
	"context"
	"net/http"
	"strings"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// AdminUser is the user every bearer token authenticates as.
const AdminUser = "frys-test-admin"

type anyTokenAuthenticator struct{}

func (anyTokenAuthenticator) AuthenticateRequest(req *http.Request) (*authenticator.Response, bool, error) {
	auth := strings.TrimSpace(req.Header.Get("Authorization"))
	if token, ok := strings.CutPrefix(auth, "Bearer "); ok && strings.TrimSpace(token) != "" {
		return &authenticator.Response{User: &user.DefaultInfo{
			Name:   AdminUser,
			Groups: []string{user.SystemPrivilegedGroup, user.AllAuthenticated},
		}}, true, nil
	}
	return &authenticator.Response{User: &user.DefaultInfo{
		Name:   user.Anonymous,
		Groups: []string{user.AllUnauthenticated},
	}}, true, nil
}

type testAuthorizer struct{}

var publicPaths = []string{"/healthz", "/readyz", "/livez", "/version"}

func (testAuthorizer) Authorize(ctx context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	if a.GetUser() != nil && a.GetUser().GetName() != user.Anonymous {
		return authorizer.DecisionAllow, "", nil
	}
	if !a.IsResourceRequest() {
		for _, p := range publicPaths {
			if a.GetPath() == p || strings.HasPrefix(a.GetPath(), p+"/") {
				return authorizer.DecisionAllow, "", nil
			}
		}
	}
	return authorizer.DecisionDeny, "anonymous requests may only read health endpoints; send any bearer token", nil
}

func (testAuthorizer) RulesFor(ctx context.Context, u user.Info, namespace string) ([]authorizer.ResourceRuleInfo, []authorizer.NonResourceRuleInfo, bool, error) {
	return []authorizer.ResourceRuleInfo{&authorizer.DefaultResourceRuleInfo{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}}},
		[]authorizer.NonResourceRuleInfo{&authorizer.DefaultNonResourceRuleInfo{Verbs: []string{"*"}, NonResourceURLs: []string{"*"}}},
		false, nil
}
