"""A brain-tumour phantom on real anatomy: MNI152 subjects, grown gliomas, MRI appearance, site scanners."""
