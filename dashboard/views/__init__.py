"""The dashboard's pages, one module per area; organization pages subclass
`dashboard.scoping.OrganizationPageMixin`."""
