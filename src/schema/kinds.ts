// The documents mountgate has a schema for (schemas/KIND.schema.json).
export const schemaKinds = ['manifest', 'bind-request', 'mount-request', 'remove-request', 'policy'] as const;
export type SchemaKind = (typeof schemaKinds)[number];
