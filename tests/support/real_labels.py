"""Facts of the real label files, shared by the label and layout tests."""

#: UCSD Ped2's anomalous frame ranges per test video (1-based, inclusive), from ped2.mat
PED2_RANGES = [(61, 180), (95, 180), (1, 146), (31, 180), (1, 129), (1, 159), (46, 180), (1, 180), (1, 120), (1, 150)]
PED2_RANGES += [(1, 180), (88, 180)]
