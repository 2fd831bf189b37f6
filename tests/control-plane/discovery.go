package main

// Legacy (unaggregated) /apis discovery of CRD groups.  In kube-apiserver the
// aggregator registers them; here the built-in server owns /apis, so a CRD
// informer adds each CRD group to its group list.  (Aggregated discovery
// needs no help: both servers share one aggregated-discovery manager.)

import (
	"sort"
	"sync"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionslisters "k8s.io/apiextensions-apiserver/pkg/client/listers/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apiserver/pkg/endpoints/discovery"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

type crdGroupDiscovery struct {
	mu      sync.Mutex
	manager discovery.GroupManager
	lister  apiextensionslisters.CustomResourceDefinitionLister
	known   map[string]bool
}

func watchCRDGroups(manager discovery.GroupManager, informer cache.SharedIndexInformer, lister apiextensionslisters.CustomResourceDefinitionLister) error {
	d := &crdGroupDiscovery{manager: manager, lister: lister, known: map[string]bool{}}
	_, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(interface{}) { d.sync() },
		UpdateFunc: func(interface{}, interface{}) { d.sync() },
		DeleteFunc: func(interface{}) { d.sync() },
	})
	return err
}

func (d *crdGroupDiscovery) sync() {
	d.mu.Lock()
	defer d.mu.Unlock()
	crds, err := d.lister.List(labels.Everything())
	if err != nil {
		klog.ErrorS(err, "listing CRDs for discovery")
		return
	}
	versions := map[string]map[string]bool{}
	for _, crd := range crds {
		if !isEstablished(crd) {
			continue
		}
		for _, v := range crd.Spec.Versions {
			if !v.Served {
				continue
			}
			if versions[crd.Spec.Group] == nil {
				versions[crd.Spec.Group] = map[string]bool{}
			}
			versions[crd.Spec.Group][v.Name] = true
		}
	}
	for group, vs := range versions {
		names := make([]string, 0, len(vs))
		for v := range vs {
			names = append(names, v)
		}
		// Highest Kubernetes-aware version first; it is the preferred one.
		sort.Slice(names, func(i, j int) bool { return version.CompareKubeAwareVersionStrings(names[i], names[j]) > 0 })
		g := metav1.APIGroup{Name: group}
		for _, v := range names {
			g.Versions = append(g.Versions, metav1.GroupVersionForDiscovery{GroupVersion: group + "/" + v, Version: v})
		}
		g.PreferredVersion = g.Versions[0]
		d.manager.AddGroup(g)
		d.known[group] = true
	}
	for group := range d.known {
		if _, ok := versions[group]; !ok {
			d.manager.RemoveGroup(group)
			delete(d.known, group)
		}
	}
}

func isEstablished(crd *apiextensionsv1.CustomResourceDefinition) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			return true
		}
	}
	return false
}
