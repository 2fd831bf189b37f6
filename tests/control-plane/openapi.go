package main

// OpenAPI definitions for the built-in kinds.  k8s.io/api ships no OpenAPI
// definitions (they are generated inside k8s.io/kubernetes), but client-go
// carries the structured-merge-diff schema of every built-in type (copied
// into package smdschema at build time).  It is turned back into OpenAPI
// here, keeping the list/map semantics server-side apply needs (containers
// merge by name, ports by containerPort/protocol, ...).  It has no field
// descriptions, so `kubectl explain` shows the structure without docs.

import (
	"sort"
	"strings"

	generatedopenapi "k8s.io/apiextensions-apiserver/pkg/generated/openapi"
	"k8s.io/apimachinery/pkg/runtime"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	"k8s.io/kube-openapi/pkg/common"
	"k8s.io/kube-openapi/pkg/validation/spec"
	"sigs.k8s.io/structured-merge-diff/v6/schema"

	"frys.test/controlplane/smdschema"
)

const (
	untypedAtomic  = "__untyped_atomic_"
	untypedDeduced = "__untyped_deduced_"
)

// getDefinitions returns definitions for the built-in kinds (from the smd
// schema), overridden by apiextensions' generated ones (meta/v1, autoscaling
// Scale, apiextensions types: those carry descriptions), plus List types.
func getDefinitions(ref common.ReferenceCallback) map[string]common.OpenAPIDefinition {
	defs := map[string]common.OpenAPIDefinition{}
	sch := &smdschema.Parser().Schema
	for i := range sch.Types {
		td := &sch.Types[i]
		if strings.HasPrefix(td.Name, "__") {
			continue
		}
		c := &smdConverter{ref: ref, deps: map[string]bool{}}
		s := c.atom(&td.Atom)
		defs[td.Name] = common.OpenAPIDefinition{Schema: s, Dependencies: c.dependencies()}
	}
	for name, def := range generatedopenapi.GetOpenAPIDefinitions(ref) {
		defs[name] = def
	}
	addListDefinitions(defs, ref)
	return defs
}

// addListDefinitions adds FooList for every served kind (the smd schema only
// has types that can be applied).
func addListDefinitions(defs map[string]common.OpenAPIDefinition, ref common.ReferenceCallback) {
	const listMeta = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"
	for _, k := range builtinKinds {
		item := modelName(k.newObj())
		list := modelName(k.newList())
		if k.gv == eventsGV { // served as events.k8s.io/v1 Event (internal type is core's)
			item, list = "io.k8s.api.events.v1.Event", "io.k8s.api.events.v1.EventList"
		}
		if _, ok := defs[list]; ok || item == "" || list == "" {
			continue
		}
		defs[list] = common.OpenAPIDefinition{
			Schema: spec.Schema{SchemaProps: spec.SchemaProps{
				Type:     []string{"object"},
				Required: []string{"items"},
				Properties: map[string]spec.Schema{
					"apiVersion": {SchemaProps: spec.SchemaProps{Type: []string{"string"}}},
					"kind":       {SchemaProps: spec.SchemaProps{Type: []string{"string"}}},
					"metadata":   {SchemaProps: spec.SchemaProps{Default: map[string]interface{}{}, Ref: ref(listMeta)}},
					"items": {SchemaProps: spec.SchemaProps{
						Type:  []string{"array"},
						Items: &spec.SchemaOrArray{Schema: &spec.Schema{SchemaProps: spec.SchemaProps{Default: map[string]interface{}{}, Ref: ref(item)}}},
					}},
				},
			}},
			Dependencies: []string{listMeta, item},
		}
	}
}

func modelName(obj runtime.Object) string {
	if n, ok := obj.(interface{ OpenAPIModelName() string }); ok {
		return n.OpenAPIModelName()
	}
	return ""
}

type smdConverter struct {
	ref  common.ReferenceCallback
	deps map[string]bool
}

func (c *smdConverter) dependencies() []string {
	out := make([]string, 0, len(c.deps))
	for d := range c.deps {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

func (c *smdConverter) atom(a *schema.Atom) spec.Schema {
	switch {
	case a.Scalar != nil && a.List == nil && a.Map == nil:
		switch *a.Scalar {
		case schema.String:
			return typed("string")
		case schema.Numeric:
			return typed("number")
		case schema.Boolean:
			return typed("boolean")
		}
		return spec.Schema{} // untyped: int-or-string, quantity, ...
	case a.Scalar != nil: // deduced/untyped: anything goes
		return preserveUnknown()
	case a.List != nil:
		s := typed("array")
		item := c.typeRef(&a.List.ElementType)
		s.Items = &spec.SchemaOrArray{Schema: &item}
		switch a.List.ElementRelationship {
		case schema.Associative:
			if len(a.List.Keys) > 0 {
				s.AddExtension("x-kubernetes-list-type", "map")
				s.AddExtension("x-kubernetes-list-map-keys", append([]string(nil), a.List.Keys...))
			} else {
				s.AddExtension("x-kubernetes-list-type", "set")
			}
		case schema.Atomic:
			s.AddExtension("x-kubernetes-list-type", "atomic")
		}
		return s
	case a.Map != nil:
		s := typed("object")
		if len(a.Map.Fields) > 0 {
			s.Properties = map[string]spec.Schema{}
			for i := range a.Map.Fields {
				f := &a.Map.Fields[i]
				fs := c.typeRef(&f.Type)
				if f.Default != nil {
					fs.Default = f.Default
				}
				s.Properties[f.Name] = fs
			}
		}
		if et := &a.Map.ElementType; et.NamedType != nil || et.Inlined != (schema.Atom{}) {
			elem := c.typeRef(et)
			s.AdditionalProperties = &spec.SchemaOrBool{Allows: true, Schema: &elem}
		}
		if a.Map.ElementRelationship == schema.Atomic {
			s.AddExtension("x-kubernetes-map-type", "atomic")
		}
		return s
	}
	return spec.Schema{}
}

func (c *smdConverter) typeRef(t *schema.TypeRef) spec.Schema {
	if t.NamedType == nil {
		return c.atom(&t.Inlined)
	}
	switch *t.NamedType {
	case untypedAtomic, untypedDeduced:
		return preserveUnknown()
	}
	c.deps[*t.NamedType] = true
	ref := spec.Schema{SchemaProps: spec.SchemaProps{Ref: c.ref(*t.NamedType)}}
	if t.ElementRelationship != nil && *t.ElementRelationship == schema.Atomic {
		// An override on a reference: schemaconv reads it from a
		// single-element allOf wrapper.
		s := spec.Schema{SchemaProps: spec.SchemaProps{AllOf: []spec.Schema{ref}}}
		s.AddExtension("x-kubernetes-map-type", "atomic")
		return s
	}
	return ref
}

func typed(t string) spec.Schema {
	return spec.Schema{SchemaProps: spec.SchemaProps{Type: []string{t}}}
}

func preserveUnknown() spec.Schema {
	s := spec.Schema{}
	s.AddExtension("x-kubernetes-preserve-unknown-fields", true)
	return s
}

// definitionNamer adds x-kubernetes-group-version-kind to definitions, minus
// the __internal versions (which here are the same Go types).
type definitionNamer struct{ *openapinamer.DefinitionNamer }

func newDefinitionNamer(schemes ...*runtime.Scheme) definitionNamer {
	return definitionNamer{openapinamer.NewDefinitionNamer(schemes...)}
}

func (n definitionNamer) GetDefinitionName(name string) (string, spec.Extensions) {
	friendly, ext := n.DefinitionNamer.GetDefinitionName(name)
	gvks, ok := ext["x-kubernetes-group-version-kind"].([]interface{})
	if !ok {
		return friendly, ext
	}
	var kept []interface{}
	for _, g := range gvks {
		if m, ok := g.(map[string]interface{}); ok && m["version"] == runtime.APIVersionInternal {
			continue
		}
		kept = append(kept, g)
	}
	if len(kept) == 0 {
		return friendly, nil
	}
	return friendly, spec.Extensions{"x-kubernetes-group-version-kind": kept}
}
